"""LLM storyboard writers: the transformers writer on a tiny random-weight LM, the openai writer against a real HTTP
server on 127.0.0.1, JSON reading and retries, and rewriting one scene."""

from __future__ import annotations

import json
import os
import socket
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from studio import (Cancelled, CancelToken, Project, ProviderUnavailable, Scene, StudioError, load_preset,
                    providers)
from studio.storyboard import rewrite_scene, write_storyboard
from studio.storyboard._llm import (BadAnswer, brief_messages, check_schema, extract_json, parse_prompts,
                                    parse_rewrite, parse_storyboard, portable_schema, prompts_schema, rewrite_schema,
                                    storyboard_schema)
from studio.storyboard.openai_llm import known_format, openai_writer
from studio.storyboard.transformers_llm import ENFORCER_NOTE, _enforceable
from studio.testing import ScriptedChat, put_in_hub_cache

from .openai_server import OpenAIServer, Reply

GOOD = json.dumps({"title": "Why the Sky Is Blue", "scenes": [
    {"narration": "Sunlight looks white, but it holds every colour.", "visual_prompt": "sunlight through a prism",
     "duration_s": None},
    {"narration": "Air scatters blue light far more than red.", "visual_prompt": "blue sky over a field",
     "duration_s": 6},
    {"narration": "So wherever you look up, blue light reaches your eyes.", "visual_prompt": "child looking up"},
]})
SCRIPT = ("# Bees\n\nBees visit flowers to collect nectar. They carry it home in their stomachs.\n\n"
          "In the hive, bees pass the nectar from mouth to mouth. Water evaporates and it thickens.\n\n"
          "Finally they seal it in wax cells, and it keeps for years.")


@pytest.fixture
def llm(tiny_models):
    """The transformers writer on the tiny random-weight LM (a fresh instance: tests script or spy on it)."""
    providers.release("storyboard", "transformers")
    writer, _ = providers.create("storyboard", "transformers", **tiny_models.options("transformers"))
    yield writer
    providers.release("storyboard", "transformers")


# -- the transformers writer --------------------------------------------------------------------------------------------
def test_tiny_lm_writes_garbage_that_is_rejected_with_what_came_back(llm):
    answers = []
    generate = llm.chat

    def spy(messages, *, schema=None, cancel=None):
        answers.append(generate(messages, schema=schema, cancel=cancel))
        return answers[-1]

    llm.chat = spy
    with pytest.raises(StudioError) as info:
        llm.write("Why the sky is blue", mode="brief", title=None, language="en", style="", target_s=30)
    message = str(info.value)
    # The real model ran twice (max_attempts=2): its first answer was rejected and it was asked again
    assert len(answers) == 2 and llm.calls == 2
    assert all(isinstance(a, str) for a in answers) and answers[0] != answers[1], "seeded per call: new answers"
    assert "gave no usable storyboard in 2 attempts" in message
    assert repr(answers[-1].strip()[:400] or "(nothing)") in message, "the error shows what came back"
    assert "writer='rules'" in message


def test_scripted_answers_are_checked_retried_and_turned_into_scenes(llm):
    with ScriptedChat(llm, ["Sure! Here is your storyboard.", "```json\n" + GOOD + "\n```"]) as chat:
        draft = llm.write("Explain why the sky is blue", mode="brief", title=None, language="fr",
                          style="flat pastel", target_s=30)
    assert draft.title == "Why the Sky Is Blue"
    assert [s.narration for s in draft.scenes][1] == "Air scatters blue light far more than red."
    assert [s.duration_s for s in draft.scenes] == [None, 6.0, None]
    assert draft.scenes[2].visual_prompt == "child looking up"
    assert len({s.id for s in draft.scenes}) == 3
    # The prompt asked for the language, the style and the length; the retry said what was wrong
    first, second = chat.conversations
    system = first[0]["content"]
    assert "French" in system and "flat pastel" in system and "75 words" in system and "30 seconds" in system
    assert second[-2] == {"role": "assistant", "content": "Sure! Here is your storyboard."}
    assert "no valid JSON" in second[-1]["content"]


def test_script_mode_keeps_the_words_and_asks_only_for_visual_prompts(llm, tiny_models):
    preset = replace(load_preset("draft"), models=tiny_models.preset_models())  # the same writer instance as `llm`
    with ScriptedChat(llm, ['{"visual_prompts": ["bee on a flower"]}',
                            '{"visual_prompts": ["bee on a flower", "inside a hive", "wax cells"]}']) as chat:
        project = write_storyboard(SCRIPT, mode="script", writer="transformers", preset=preset)
    assert [s.visual_prompt for s in project.scenes] == ["bee on a flower", "inside a hive", "wax cells"]
    rules = write_storyboard(SCRIPT, mode="script", writer="rules")
    assert [s.narration for s in project.scenes] == [s.narration for s in rules.scenes]  # the words are the user's
    assert "exactly 3 are needed" in chat.conversations[1][-1]["content"]
    assert any("wrote the visual prompts" in n for n in project.notes)


def test_long_scripts_are_prompted_in_batches(llm):
    script = "\n\n".join(f"Paragraph {i} talks about topic number {i} in some detail here." for i in range(15))
    with ScriptedChat(llm, [json.dumps({"visual_prompts": [f"picture {i}" for i in range(12)]}),
                            json.dumps({"visual_prompts": [f"picture {i}" for i in range(12, 15)]})]) as chat:
        draft = llm.write(script, mode="script")
    assert [s.visual_prompt for s in draft.scenes] == [f"picture {i}" for i in range(15)]
    assert len(chat.conversations) == 2
    assert "Story so far" in chat.conversations[1][1]["content"]  # the second batch sees the scenes before it


def test_generation_stops_at_once_on_cancel(llm):
    class CancelAfterReads(CancelToken):
        """The user cancels while the 5th token is made: generation must stop at the next one."""

        def __init__(self) -> None:
            super().__init__()
            self.reads = 0

        @property
        def cancelled(self) -> bool:
            self.reads += 1
            if self.reads == 5:
                self.cancel()
            return super().cancelled

    token = CancelAfterReads()
    llm.max_new_tokens = 2000
    with pytest.raises(Cancelled):
        llm.chat([{"role": "user", "content": "Hello"}], cancel=token)
    assert token.reads <= 8, f"the token was read {token.reads} times: generation did not stop at the cancel"


def test_a_hybrid_thinking_model_is_asked_for_the_answer_only(llm):
    """Qwen3's chat template thinks aloud before answering unless `enable_thinking` is False: the writer turns it
    off (a template without the switch ignores it)."""
    from transformers import AutoTokenizer

    llm.load()
    tokenizer = AutoTokenizer.from_pretrained(llm.weights.folder)
    tokenizer.chat_template = ("{% for m in messages %}{{ m['content'] }}\n{% endfor %}"
                               "{% if enable_thinking is not defined or enable_thinking %}<think>{% endif %}A:")
    llm._tokenizer = tokenizer
    ids, _ = llm._prompt_ids([{"role": "user", "content": "Write a storyboard."}])
    prompt = tokenizer.decode(ids[0])
    assert prompt.rstrip().endswith("A:") and "<think>" not in prompt


def test_generation_is_constrained_to_the_schema(llm):
    """The tiny model's words are noise, but constrained to the schema they are JSON of the storyboard's shape."""
    pytest.importorskip("lmformatenforcer")
    tokenizer_text = '{"title": "A", "scenes": [{"narration": "b", "duration_s": 12.5}, null]}'
    llm.load()
    assert llm._tokenizer.decode(llm._tokenizer.encode(tokenizer_text, add_special_tokens=False)) == tokenizer_text
    messages = brief_messages("Why is the sky blue?", title=None, language="en", style="", target_s=20)
    llm.max_new_tokens = 600  # room for the whitespace a random model strews between values; it stops at the end
    schema = storyboard_schema(max_scenes=2, max_chars=12)  # short texts: a random model never closes a string
    for _ in range(3):  # three calls, three seeds
        answer = llm.chat(messages, schema=schema)
        data = json.loads(answer)
        check_schema(data, schema)
        assert set(data) == {"title", "scenes"} and 1 <= len(data["scenes"]) <= 2
        assert all(set(scene) == {"narration", "visual_prompt", "duration_s"} for scene in data["scenes"])
        durations = [scene["duration_s"] for scene in data["scenes"]]
        assert all(d is None or (isinstance(d, int) and 1 <= d <= 60) for d in durations)
        parse_storyboard(answer, schema)
    prompts = prompts_schema(3, max_chars=10)
    assert len(parse_prompts(llm.chat(messages, schema=prompts), 3, prompts)) == 3
    assert parse_rewrite(llm.chat(messages, schema=rewrite_schema("narration", 10)), "narration",
                         rewrite_schema("narration", 10))
    # Unconstrained, the same model gives no JSON at all
    with pytest.raises(BadAnswer):
        extract_json(llm.chat(messages))


def test_without_lm_format_enforcer_the_model_writes_unconstrained_and_the_notes_say_so(llm, monkeypatch):
    pytest.importorskip("lmformatenforcer")
    assert llm.output_notes() == ()
    monkeypatch.setitem(sys.modules, "lmformatenforcer", None)  # `import lmformatenforcer` fails
    llm.load()
    assert llm._constraint(storyboard_schema()) is None
    assert isinstance(llm.chat([{"role": "user", "content": "Hi"}], schema=storyboard_schema()), str)
    with ScriptedChat(llm, [GOOD]):
        draft = llm.write("Why the sky is blue", mode="brief")
    assert ENFORCER_NOTE in draft.notes and ENFORCER_NOTE == (
        "storyboard: install lm-format-enforcer for schema-constrained output")


def test_loads_from_the_hub_cache_by_id(tiny_models, tmp_path):
    cache = tmp_path / "hub"
    put_in_hub_cache(tiny_models.folder("llm"), "tiny-org/tiny-chat", cache)
    options = {**tiny_models.options("transformers"), "model": "tiny-org/tiny-chat", "cache_dir": str(cache)}
    choice = providers.choose("storyboard", "auto", prefer=["transformers", "rules"], configs={"transformers": options})
    assert choice.name == "transformers" and "hub cache" in choice.reason
    writer, _ = providers.create("storyboard", "transformers", **options)
    assert isinstance(writer.chat([{"role": "user", "content": "Hi"}]), str)
    # Without the cache the model is not here, and auto moves on, saying why
    missing = providers.choose("storyboard", "auto", prefer=["transformers", "rules"],
                               configs={"transformers": {**options, "cache_dir": str(tmp_path / "empty")}})
    assert missing.name == "rules" and "hf download tiny-org/tiny-chat" in missing.reason


# -- reading answers ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("text", [
    GOOD,
    "Here you go:\n```json\n" + GOOD + "\n```\nEnjoy!",
    "Sure. " + GOOD + " Anything else?",
    GOOD.replace('"duration_s": 6}', '"duration_s": 6,}').replace(']}', '],}'),  # trailing commas
    GOOD.replace('"title"', "“title”"),  # curly quotes
])
def test_json_is_found_and_repaired(text):
    title, scenes = parse_storyboard(text)
    assert title == "Why the Sky Is Blue" and len(scenes) == 3


@pytest.mark.parametrize("text, reason", [
    ("", "empty"),
    ("I cannot help with that.", "no valid JSON"),
    ('{"title": "x", "scenes": []}', "non-empty list"),
    ('{"scenes": [{"visual_prompt": "a cat"}]}', "scene 1's `narration`"),
    ('{"scenes": [{"narration": "' + "word " * 80 + '"}]}', "at most 70"),
    ('{"scenes": [{"narration": "Hi.", "duration_s": 500}]}', "`duration_s`"),
    ('{"scenes": [{"narration": "Hi.", "duration_s": "5"}]}', "`duration_s`"),
    ('["just", "strings"]', "scene 1 must be an object"),
])
def test_bad_answers_say_what_is_wrong(text, reason):
    with pytest.raises(BadAnswer) as info:
        parse_storyboard(text)
    assert reason in str(info.value)


def test_the_schemas_check_answers_and_are_sent_in_the_portable_subset():
    schema = storyboard_schema()
    good = json.loads(GOOD)
    for scene in good["scenes"]:
        scene.setdefault("duration_s", None)
    check_schema(good, schema)
    for bad, reason in [({"title": "T"}, "`scenes` is missing"),
                        ({"title": "T", "scenes": [{"narration": "a", "visual_prompt": 3, "duration_s": None}]},
                         "scene 1's `visual_prompt` must be a string"),
                        ({"title": "T", "scenes": [{"narration": "a", "visual_prompt": "b", "duration_s": True}]},
                         "scene 1's `duration_s` must be a number from 1 to 60 or null"),
                        ({"title": "T", "scenes": [{"narration": "x" * 701, "visual_prompt": "b", "duration_s": 2}]},
                         "has 701 characters; at most 700"),
                        ({"title": "T", "scenes": [good["scenes"][0]] * 61}, "`scenes` has 61 items; at most 60"),
                        ({"visual_prompts": ["a", " "]}, "visual prompt 2 must be a non-empty string")]:
        with pytest.raises(BadAnswer, match=reason.replace("(", r"\(")):
            check_schema(bad, prompts_schema(2) if "visual_prompts" in bad else schema)
    check_schema({**good, "extra": 1}, schema)  # keys the schema does not name are ignored on the way in
    # Sent: structure only (strict mode's subset); lengths, counts and ranges stay here
    sent = json.dumps(portable_schema(schema))
    assert all(word not in sent for word in ("minLength", "maxLength", "minItems", "maxItems", "minimum", "maximum",
                                             '"title": "storyboard"'))
    assert schema["title"] == "storyboard" and portable_schema(schema)["required"] == ["title", "scenes"]
    # lm-format-enforcer does not bound numbers: a bounded duration becomes the whole seconds in range
    duration = _enforceable(schema)["properties"]["scenes"]["items"]["properties"]["duration_s"]
    assert duration == {"anyOf": [{"type": "integer", "enum": list(range(1, 61))}, {"type": "null"}]}


def test_prompt_answers_need_one_per_scene():
    assert parse_prompts('{"visual_prompts": ["a", "b"]}', 2) == ["a", "b"]
    assert parse_prompts('[{"visual_prompt": "a"}, {"visual_prompt": "b"}]', 2) == ["a", "b"]
    with pytest.raises(BadAnswer, match="exactly 3"):
        parse_prompts('{"visual_prompts": ["a", "b"]}', 3)
    assert extract_json("noise [1, 2] more") == [1, 2]


# -- rewriting one scene --------------------------------------------------------------------------------------------------
@pytest.fixture
def story(tmp_path) -> Project:
    scenes = (Scene("a", "Bees visit flowers.", "bee"), Scene("b", "the the hive   hums , all day", "hive"),
              Scene("c", "Honey keeps for years.", "jar"))
    return Project(title="Honey", scenes=scenes, language="en")


def test_rewrite_with_an_llm_changes_one_field_of_one_scene(llm, story, tiny_models):
    preset = replace(load_preset("draft"), models=tiny_models.preset_models())
    with_audio = story.replace_scene(story.scene("b").with_audio(Path("b.wav"), (), 1.0))
    with ScriptedChat(llm, ['{"text": "Inside, the hive hums all day long."}']) as chat:
        edited = rewrite_scene(with_audio, "b", field="narration", instruction="make it vivid", writer="transformers",
                               preset=preset)
    assert edited.scene("b").narration == "Inside, the hive hums all day long."
    assert edited.scene("b").visual_prompt == "hive" and edited.scene("b").audio is None  # stale audio dropped
    assert [edited.scene(i) for i in "ac"] == [story.scene(i) for i in "ac"]
    assert story.scene("b").narration == "the the hive   hums , all day", "the input is not changed"
    user = chat.conversations[0][1]["content"]
    assert "make it vivid" in user and "Bees visit flowers." in user and "Honey keeps for years." in user
    assert any("rewritten by transformers" in n for n in edited.notes)


def test_rules_rewrite_is_an_honest_offline_tidy_up(story):
    tidy = rewrite_scene(story, "b", field="narration", writer="rules")
    assert tidy.scene("b").narration == "The hive hums, all day."
    prompt = rewrite_scene(story, "c", field="visual_prompt", writer="rules").scene("c").visual_prompt
    assert "honey" in prompt.lower() and prompt != "jar"
    with pytest.raises(ProviderUnavailable, match="needs an LLM"):
        rewrite_scene(story, "b", field="narration", instruction="shorter", writer="rules")
    with pytest.raises(StudioError, match="`field`"):
        rewrite_scene(story, "b", field="title")
    with pytest.raises(StudioError, match="no scene with id"):
        rewrite_scene(story, "zz", field="narration")
    with pytest.raises(StudioError, match="`writer`"):
        rewrite_scene(story, "b", writer="gpt-9")


# -- the openai writer against a real local server -----------------------------------------------------------------------
def _openai(server: OpenAIServer, **options):
    defaults = {"base_url": server.url, "model": "tiny-chat", "api_key": "sk-test-secret-123", "backoff_s": 0.01,
                "timeout_s": 5.0}
    writer, _ = providers.create("storyboard", "openai", **{**defaults, **options})
    return writer


def test_openai_writes_a_storyboard(tmp_path):
    with OpenAIServer(answers=[GOOD]) as server:
        writer = _openai(server)
        draft = writer.write("Why the sky is blue", mode="brief", title=None, language="en", style="", target_s=20)
    assert draft.title == "Why the Sky Is Blue" and len(draft.scenes) == 3
    (request,) = [r for r in server.requests if r["method"] == "POST"]
    assert request["path"] == "/v1/chat/completions"
    assert request["headers"]["Authorization"] == "Bearer sk-test-secret-123"
    body = request["json"]
    assert body["model"] == "tiny-chat"
    assert body["messages"][0]["role"] == "system" and "Why the sky is blue" in body["messages"][1]["content"]
    # The storyboard's JSON schema goes with the request, in strict mode's subset (the limits are checked here)
    assert body["response_format"] == {"type": "json_schema", "json_schema": {
        "name": "storyboard", "schema": portable_schema(storyboard_schema()), "strict": True}}
    schema = body["response_format"]["json_schema"]["schema"]
    assert schema["required"] == ["title", "scenes"] and schema["additionalProperties"] is False
    scene = schema["properties"]["scenes"]["items"]
    assert scene["required"] == ["narration", "visual_prompt", "duration_s"] and scene["additionalProperties"] is False
    assert scene["properties"]["duration_s"] == {"type": ["number", "null"]}
    assert "maxLength" not in json.dumps(schema) and "maxItems" not in json.dumps(schema)


def test_openai_sends_the_schema_of_each_kind_of_answer():
    script_answer = json.dumps({"visual_prompts": ["bees on flowers", "inside a hive", "wax cells"]})
    with OpenAIServer(answers=[script_answer, '{"text": "Honey keeps for years and years."}']) as server:
        writer = _openai(server)
        draft = writer.write(SCRIPT, mode="script")
        project = Project(title="Bees", scenes=draft.scenes)
        assert writer.rewrite(project, draft.scenes[2].id, field="narration") == "Honey keeps for years and years."
        prompts, rewrite = (body["response_format"]["json_schema"] for body in server.chats)
    assert prompts["name"] == "visual_prompts" and prompts["schema"] == portable_schema(prompts_schema(3))
    assert prompts["schema"]["properties"]["visual_prompts"] == {"type": "array", "items": {"type": "string"}}
    assert rewrite["name"] == "rewrite" and rewrite["schema"]["required"] == ["text"]


def test_openai_retries_429_and_5xx_with_backoff():
    replies = [Reply(429, {"error": {"message": "Rate limit reached"}}, headers={"Retry-After": "0"}),
               Reply(503, {"error": {"message": "overloaded"}}), Reply()]
    with OpenAIServer(answers=[GOOD], replies=replies) as server:
        draft = _openai(server).write("Sky", mode="brief")
        assert len(server.chats) == 3 and len(draft.scenes) == 3
    with OpenAIServer(replies=[Reply(500, {"error": {"message": "boom"}})] * 3) as server:
        with pytest.raises(StudioError, match=r"kept failing \(HTTP 500: boom\) after 2 retries"):
            _openai(server, max_retries=2).write("Sky", mode="brief")
        assert len(server.chats) == 3


def test_openai_401_says_to_set_the_key_and_never_shows_it():
    with OpenAIServer(replies=[Reply(401, {"error": {"message": "Incorrect API key provided"}})]) as server:
        with pytest.raises(StudioError) as info:
            _openai(server).write("Sky", mode="brief")
    message = str(info.value)
    assert "HTTP 401" in message and "OPENAI_API_KEY" in message and "Incorrect API key" in message
    assert "sk-test-secret" not in message and "sk-test-secret" not in repr(_openai)


def test_openai_unknown_model_lists_what_the_server_has():
    body = {"error": {"message": "The model `gpt-9` does not exist", "code": "model_not_found"}}
    with OpenAIServer(replies=[Reply(404, body)], models=("llama3.2", "qwen2.5")) as server:
        with pytest.raises(StudioError) as info:
            _openai(server, model="gpt-9").write("Sky", mode="brief")
    message = str(info.value)
    assert "does not know model 'gpt-9'" in message and "llama3.2, qwen2.5" in message
    assert "STUDIO_LLM_MODEL" in message


def test_openai_connection_refused_and_timeout():
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    writer = openai_writer(base_url=f"http://127.0.0.1:{port}/v1", model="m", backoff_s=0.01)
    with pytest.raises(StudioError, match="cannot connect to .*connection refused.*is the server running"):
        writer.write("Sky", mode="brief")
    with pytest.raises(ProviderUnavailable, match="nothing answers at"):
        providers.choose("storyboard", "openai", base_url=f"http://127.0.0.1:{port}/v1", model="m")

    with OpenAIServer(replies=[Reply(delay_s=1.5)], answers=[GOOD]) as server:
        with pytest.raises(StudioError, match=r"gave no answer within 0.3 s"):
            _openai(server, timeout_s=0.3).write("Sky", mode="brief")


def test_openai_falls_back_to_json_mode_then_to_nothing_and_remembers_per_server():
    # A server without structured outputs: json_schema refused, then JSON mode refused, then a plain request
    no_schema = Reply(400, {"error": {"message": "'response_format.type' must be 'json_object' or 'text'"}})
    no_json = Reply(400, {"error": {"message": "response_format is not supported"}})
    with OpenAIServer(replies=[no_schema, no_json], answers=[GOOD, GOOD]) as server:
        writer = _openai(server)
        assert known_format(server.url) == "json_schema"
        assert len(writer.write("Sky", mode="brief").scenes) == 3
        first, second, third = server.chats
        assert first["response_format"]["type"] == "json_schema"
        assert second["response_format"] == {"type": "json_object"}
        assert "response_format" not in third and third["messages"] == first["messages"]
        # Remembered for this base URL, for every writer in the process: the next request goes plain at once
        assert known_format(server.url) == "none"
        assert len(_openai(server).write("Sky", mode="brief").scenes) == 3
        assert len(server.chats) == 4 and "response_format" not in server.chats[3]


def test_openai_json_mode_fallback_and_refusals_that_are_not_about_the_format():
    refused = Reply(400, {"error": {"message": "Invalid schema for response_format 'storyboard'"}})
    with OpenAIServer(replies=[refused], answers=[GOOD, GOOD]) as server:
        writer = _openai(server)
        assert len(writer.write("Sky", mode="brief").scenes) == 3
        first, second = server.chats
        assert first["response_format"]["type"] == "json_schema" and second["response_format"] == {
            "type": "json_object"}
        assert known_format(server.url) == "json_object"
        writer.write("Sky", mode="brief")
        assert server.chats[2]["response_format"] == {"type": "json_object"}  # no second try of the schema
    # Another 400 is not taken for a format refusal: it fails at once, with the server's words, and nothing is learnt
    too_long = Reply(400, {"error": {"message": "This model's maximum context length is 4096 tokens"}})
    with OpenAIServer(replies=[too_long]) as server:
        with pytest.raises(StudioError, match="HTTP 400: This model's maximum context length"):
            _openai(server).write("Sky", mode="brief")
        assert len(server.chats) == 1 and known_format(server.url) == "json_schema"
    # A server that refuses even the plain request says so, and nothing is learnt from a request that failed
    with OpenAIServer(replies=[Reply(400, {"error": {"message": "bad response_format"}})] * 3) as server:
        with pytest.raises(StudioError, match=r"answered HTTP 400: bad response_format"):
            _openai(server).write("Sky", mode="brief")
        assert len(server.chats) == 3 and known_format(server.url) == "json_schema"
    # json_mode=False never sends a response_format
    with OpenAIServer(answers=[GOOD]) as server:
        _openai(server, json_mode=False).write("Sky", mode="brief")
        assert "response_format" not in server.chats[0]


def test_openai_auto_needs_studio_to_be_pointed_at_a_server(monkeypatch):
    for name in ("OPENAI_BASE_URL", "OPENAI_API_BASE", "STUDIO_LLM_MODEL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-lying-around")
    choice = providers.choose("storyboard", "auto", prefer=["openai", "rules"])
    assert choice.name == "rules" and "no server configured" in choice.reason
    with OpenAIServer(answers=[GOOD]) as server:
        monkeypatch.setenv("OPENAI_BASE_URL", server.url)
        monkeypatch.setenv("STUDIO_LLM_MODEL", "tiny-chat")
        choice = providers.choose("storyboard", "auto", prefer=["openai", "rules"])
        assert choice.name == "openai" and "tiny-chat at " + server.url in choice.reason
        providers.release("storyboard", "openai")
        project = write_storyboard("Why is the sky blue?", mode="brief", writer="auto", preset=load_preset("draft"))
        providers.release("storyboard", "openai")
    assert project.title == "Why the Sky Is Blue" and project.notes[0].startswith("storyboard: openai: first of")
    assert os.environ["OPENAI_API_KEY"] == "sk-lying-around"
