"""Tiny random-weight models for tests, notebooks and demos: the real classes, built in-process from small configs.

No weights can be downloaded on a test machine, so every model provider is exercised on models that have the real
architecture and loading path but a few thousand parameters each, as diffusers' and transformers' own tests do::

    from studio import testing
    folder = testing.tiny_sd(tmp_path / "sd")               # a StableDiffusionPipeline saved with save_pretrained
    painter, _ = studio.providers.create("painter", "diffusers-image", model=str(folder), device="cpu")

Each builder writes a folder with ``save_pretrained`` (so the providers' real ``from_pretrained(folder)`` path runs)
and returns it; building one takes about a second on a CPU. They produce noise, not speech or pictures: tests on them
check shapes, lengths, timings, seeds, progress and cancellation, never content.

- `tiny_llm`: a Llama causal LM with a byte-level BPE tokenizer trained here (``tokenizers``) and a chat template.
- `tiny_bark`: a Bark model (semantic, coarse, fine, EnCodec codec) with a BERT tokenizer and two voice presets.
- `tiny_sd`: a Stable Diffusion pipeline (UNet, VAE, CLIP text encoder, a CLIP tokenizer written here).
- `tiny_motion_adapter` / `tiny_animatediff`: an AnimateDiff motion adapter matching `tiny_sd`'s UNet, or a whole
  AnimateDiff pipeline.
- `tiny_kokoro`: an ONNX graph with Kokoro-82M's inputs and outputs, its vocabulary and voice files, in the hub
  export's layout (for the ``kokoro`` narrator).
- `tiny_ctc_aligner`: a ``Wav2Vec2ForCTC`` shaped like the MMS forced aligner, with its character vocabulary.
- `put_in_hub_cache`: lay a saved folder out as a Hugging Face hub cache entry, to test loading by hub id offline.
- `ScriptedChat`: make an LLM writer answer with scripted text (to test what the writer does with good and bad answers).
- `TinyModels`: a folder of the above, built on first use, and the provider options that run each provider on them.
- `uploaded`: a file put where Gradio puts a browser's upload, for the studio's upload handlers.
- `make_recording`: a stand-in for a user's own recording of a narration (espeak-ng at another rate, padded with
  silence, quiet, at a microphone's sample rate), for tests and notebooks that have no microphone.
- `write_tiny_preset`: a render preset of 96x96 at 12 fps with the offline providers, for tests and benchmark smoke runs
  where per-job overhead, not pixels, is what is measured.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
from pathlib import Path
from typing import Any, Iterator, Sequence

# Words the tiny LLM's tokenizer is trained on: enough for storyboards and JSON to take few tokens each.
_CORPUS = """
You write storyboards for short narrated videos. Answer with one JSON object and nothing else, in this form:
{"title": "...", "scenes": [{"narration": "...", "visual_prompt": "...", "duration_s": null}]}
narration: what the narrator says, in English; one to three sentences, at most 45 words; plain spoken language.
visual_prompt: one concrete picture for a text-to-image model: subject, setting, light, composition; no text.
You write visual prompts for the scenes of a narrated video. {"visual_prompts": ["...", "..."]} {"text": "..."}
Brief: Title: Video: Scenes: Scene before: Scene after: This scene's narration: Rewrite Instruction:
The sun rises over the hills. Bees make honey from nectar. Coffee grows on shrubs in the tropics.
Why is the sky blue? Light from the sun scatters in the air, and blue light scatters most.
system user assistant
"""
_CHAT_TEMPLATE = ("{% for message in messages %}<|{{ message['role'] }}|>\n{{ message['content'] }}<|end|>\n"
                  "{% endfor %}{% if add_generation_prompt %}<|assistant|>\n{% endif %}")


@contextlib.contextmanager
def _seeded(seed: int) -> Iterator[None]:
    """Build random weights from `seed` without disturbing the caller's random state."""
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def _fresh(folder: str | Path) -> Path:
    folder = Path(folder)
    if folder.exists() and any(folder.iterdir()):
        raise FileExistsError(f"{folder} is not empty; give a new folder")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


# -- language model ------------------------------------------------------------------------------------------------------
def tiny_llm(folder: str | Path, *, seed: int = 0, vocab_size: int = 800) -> Path:
    """A tiny Llama causal LM (2 layers, hidden size 32) and its trained byte-level BPE tokenizer, saved in `folder`.

    The tokenizer has a chat template (``<|user|>``-style), ``<|end|>`` as end of sequence and a pad token, so the
    ``transformers`` writer's real path (chat template, generate, decode) runs on it. Its answers are noise.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    folder = _fresh(folder)
    special = ["<|pad|>", "<|begin|>", "<|end|>", "<|system|>", "<|user|>", "<|assistant|>"]
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=special,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    bpe.train_from_iterator([_CORPUS] * 4, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, pad_token="<|pad|>", bos_token="<|begin|>",
                                        eos_token="<|end|>", unk_token=None)
    tokenizer.chat_template = _CHAT_TEMPLATE
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=True)
    with _seeded(seed):
        model = LlamaForCausalLM(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


class ScriptedChat:
    """Make an LLM writer answer with scripted text, in order, instead of its model's own words.

    The writer's own prompting, JSON checking, retries and error messages run unchanged; only what the model says is
    scripted. It records every conversation it was sent, and the JSON schema each answer was asked to fit::

        with ScriptedChat(writer, ["not json", '{"title": "T", "scenes": [...]}']) as chat:
            draft = writer.write("A brief", mode="brief")
        assert len(chat.conversations) == 2 and chat.schemas[0]["required"] == ["title", "scenes"]
    """

    def __init__(self, writer: Any, answers: Sequence[str]) -> None:
        self.writer = writer
        self.answers = list(answers)
        self.conversations: list[list[dict[str, str]]] = []
        self.schemas: list[dict[str, Any] | None] = []
        self._original: Any = None

    def __call__(self, messages: list[dict[str, str]], *, schema: dict[str, Any] | None = None,
                 cancel: Any = None) -> str:
        self.conversations.append([dict(m) for m in messages])
        self.schemas.append(schema)
        if not self.answers:
            raise AssertionError("ScriptedChat ran out of scripted answers")
        return self.answers.pop(0)

    def __enter__(self) -> "ScriptedChat":
        self._original = self.writer.__dict__.get("chat")
        self.writer.chat = self
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._original is None:
            del self.writer.chat
        else:
            self.writer.chat = self._original


# -- Bark ---------------------------------------------------------------------------------------------------------------
BARK_VOICES = ("v2/en_speaker_0", "v2/en_speaker_1")
BARK_SAMPLE_RATE = 8000


def tiny_bark(folder: str | Path, *, seed: int = 0) -> Path:
    """A tiny Bark model (``BarkModel``: semantic, coarse and fine transformers with hidden size 16 and 2 layers, a
    tiny EnCodec codec) with its processor (a BERT tokenizer) and two voice presets, saved in `folder`.

    Vocabulary sizes cover Bark's token offsets (semantic input 129600, output 10048; coarse 12096; fine 1056 with 8
    codebooks). Its generation config keeps Bark's token layout but runs at 10 semantic and 16 codec frames per
    second of 8 kHz audio, with short context windows, so a sentence takes well under a second on a CPU.
    """
    import numpy as np
    from transformers import BarkConfig, BarkModel, BarkProcessor, BertTokenizer, EncodecConfig, GenerationConfig
    from transformers.models.bark.generation_configuration_bark import BarkGenerationConfig

    folder = _fresh(folder)
    sub = {"hidden_size": 16, "num_layers": 2, "num_heads": 2, "block_size": 512}
    codec = EncodecConfig(sampling_rate=BARK_SAMPLE_RATE, hidden_size=16, num_filters=4, upsampling_ratios=[5, 5, 4, 5],
                          codebook_size=1024, num_lstm_layers=1, target_bandwidths=[1.5, 3.0, 6.0, 12.0])
    config = BarkConfig(
        semantic_config={**sub, "input_vocab_size": 129600, "output_vocab_size": 10048},
        coarse_acoustics_config={**sub, "input_vocab_size": 12096, "output_vocab_size": 12096},
        fine_acoustics_config={**sub, "input_vocab_size": 1056, "output_vocab_size": 1056, "n_codes_total": 8,
                               "n_codes_given": 1},
        codec_config=codec.to_dict(),
    )
    with _seeded(seed):
        model = BarkModel(config)
        # EnCodec's codebooks start as zeros (they are learned): random ones make each code sound different, so the
        # audio depends on what the transformers generate (seeds, voices) as a trained model's does.
        import torch

        for layer in model.codec_model.quantizer.layers:
            layer.codebook.embed.copy_(torch.randn_like(layer.codebook.embed))
            layer.codebook.embed_avg.copy_(layer.codebook.embed)
    generation = BarkGenerationConfig(
        semantic_config={"semantic_rate_hz": 10.0, "max_new_tokens": 200, "temperature": 0.7, "top_k": 50},
        coarse_acoustics_config={"coarse_rate_hz": 16, "max_coarse_history": 60, "sliding_window_len": 30,
                                 "max_coarse_input_length": 128, "temperature": 0.7, "top_k": 50},
        fine_acoustics_config={"max_fine_history_length": 64, "max_fine_input_length": 128, "temperature": 0.5},
        sample_rate=BARK_SAMPLE_RATE, codebook_size=1024)
    model.generation_config = GenerationConfig.from_dict(generation.to_dict())
    model.save_pretrained(folder)

    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + list("abcdefghijklmnopqrstuvwxyz0123456789.,!?;:'\"-%")
    words += ["the", "a", "and", "of", "to", "in", "is", "it", "hello", "there", "sun", "moon", "fox", "dog"]
    processor = BarkProcessor(tokenizer=BertTokenizer(vocab={w: i for i, w in enumerate(words)}))
    processor.save_pretrained(folder)
    # Voice presets, laid out as suno/bark's: speaker_embeddings/<name>_<prompt>.npy and an index file.
    rng = np.random.default_rng(seed)
    index: dict[str, Any] = {"repo_or_path": str(folder)}
    (folder / "speaker_embeddings" / "v2").mkdir(parents=True, exist_ok=True)
    for voice in BARK_VOICES:
        arrays = {"semantic_prompt": rng.integers(0, 10000, 20),
                  "coarse_prompt": rng.integers(0, 1024, (2, 32)),
                  "fine_prompt": rng.integers(0, 1024, (8, 32))}
        index[voice] = {}
        for key, array in arrays.items():
            relative = f"speaker_embeddings/{voice}_{key}.npy"
            np.save(folder / relative, array.astype(np.int64), allow_pickle=False)
            index[voice][key] = relative
    (folder / "speaker_embeddings_path.json").write_text(json.dumps(index), "utf-8")
    return folder


# -- Stable Diffusion and AnimateDiff ----------------------------------------------------------------------------------------
_UNET_CHANNELS = (8, 16)


def clip_tokenizer() -> Any:
    """A CLIP tokenizer written here (no download): every byte symbol and its ``</w>`` (word end) form, no merges,
    so every character is a token. Enough to drive any CLIP text encoder's real code path."""
    from transformers import CLIPTokenizer
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    symbols = list(bytes_to_unicode().values())
    vocab = {s: i for i, s in enumerate(symbols)}
    vocab.update({f"{s}</w>": len(symbols) + i for i, s in enumerate(symbols)})
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=77)


def _sd_components(seed: int) -> dict[str, Any]:
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    tokenizer = clip_tokenizer()
    with _seeded(seed):
        unet = UNet2DConditionModel(block_out_channels=_UNET_CHANNELS, layers_per_block=1, sample_size=32,
                                    in_channels=4, out_channels=4, norm_num_groups=2, attention_head_dim=2,
                                    cross_attention_dim=8, down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                                    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"))
        vae = AutoencoderKL(block_out_channels=[4, 8], in_channels=3, out_channels=3, latent_channels=4,
                            norm_num_groups=2, down_block_types=["DownEncoderBlock2D"] * 2,
                            up_block_types=["UpDecoderBlock2D"] * 2, sample_size=64)
        text_encoder = CLIPTextModel(CLIPTextConfig(
            vocab_size=len(tokenizer), hidden_size=8, intermediate_size=16, num_attention_heads=2,
            num_hidden_layers=2, projection_dim=8, bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id))
    return {"unet": unet, "vae": vae, "text_encoder": text_encoder, "tokenizer": tokenizer}


def tiny_sd(folder: str | Path, *, seed: int = 0) -> Path:
    """A tiny Stable Diffusion pipeline (UNet with channels (8, 16), a 2x VAE, a 2-layer CLIP text encoder, an Euler
    ancestral scheduler with trailing timesteps like SD-Turbo's), saved in `folder`. Native size 64x64."""
    from diffusers import EulerAncestralDiscreteScheduler, StableDiffusionPipeline

    folder = _fresh(folder)
    scheduler = EulerAncestralDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                                timestep_spacing="trailing", steps_offset=1)
    pipe = StableDiffusionPipeline(**_sd_components(seed), scheduler=scheduler, safety_checker=None,
                                   feature_extractor=None, requires_safety_checker=False)
    pipe.save_pretrained(folder)
    return folder


def _motion_adapter(seed: int) -> Any:
    from diffusers import MotionAdapter

    with _seeded(seed + 1):
        return MotionAdapter(block_out_channels=_UNET_CHANNELS, motion_layers_per_block=1, motion_norm_num_groups=2,
                             motion_num_attention_heads=2, motion_max_seq_length=32)


def tiny_motion_adapter(folder: str | Path, *, seed: int = 0) -> Path:
    """A tiny AnimateDiff ``MotionAdapter`` whose blocks match `tiny_sd`'s UNet, saved in `folder` (pair it with a
    `tiny_sd` folder as the base model, as one pairs guoyww's adapters with a Stable Diffusion 1.5 model)."""
    folder = _fresh(folder)
    _motion_adapter(seed).save_pretrained(folder)
    return folder


def tiny_animatediff(folder: str | Path, *, seed: int = 0) -> Path:
    """A whole tiny AnimateDiff pipeline (`tiny_sd`'s components, a motion adapter, a DDIM scheduler), saved in
    `folder`; 8 frames at 64x64 in 2 steps take about half a second on one CPU core."""
    from diffusers import AnimateDiffPipeline, DDIMScheduler

    folder = _fresh(folder)
    scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="linear", clip_sample=False,
                              steps_offset=1, timestep_spacing="trailing")
    pipe = AnimateDiffPipeline(**_sd_components(seed), motion_adapter=_motion_adapter(seed), scheduler=scheduler,
                               feature_extractor=None, image_encoder=None)
    pipe.save_pretrained(folder)
    return folder


# -- Kokoro (ONNX) ------------------------------------------------------------------------------------------------------
# Kokoro-82M v1.0's phoneme vocabulary (its config.json / tokenizer.json): symbol i has id _KOKORO_IDS[i].
_KOKORO_SYMBOLS = (';:,.!?—…"()“” \u0303ʣʥʦʨᵝꭧAIOQSTWYᵊabcdefhijklmnopqrstuvwxyzɑɐɒæβɔɕçɖðʤəɚɛɜɟɡɥɨɪʝɯɰŋɳɲɴøɸθœɹɾɻʁ'
                   'ɽʂʃʈʧʊʋʌɣɤχʎʒʔˈˌːʰʲ↓→↗↘ᵻ')
_KOKORO_IDS = (1, 2, 3, 4, 5, 6, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 31, 33, 35, 36, 39, 41,
               42, 43, 44, 45, 46, 47, 48, 50, 51, 52, 53, 54, 55, 56, 57, 58, 59, 60, 61, 62, 63, 64, 65, 66, 67, 68, 69,
               70, 71, 72, 75, 76, 77, 78, 80, 81, 82, 83, 85, 86, 87, 90, 92, 99, 101, 102, 103, 110, 111, 112, 113, 114,
               115, 116, 118, 119, 120, 123, 125, 126, 128, 129, 130, 131, 132, 133, 135, 136, 138, 139, 140, 142, 143,
               147, 148, 156, 157, 158, 162, 164, 169, 171, 172, 173, 177)
KOKORO_VOCAB = dict(zip(_KOKORO_SYMBOLS, _KOKORO_IDS))
KOKORO_SAMPLES_PER_TOKEN = 1200  # the tiny graph says every phoneme id (pads included) for 50 ms at 24 kHz


def tiny_kokoro(folder: str | Path, *, seed: int = 0, durations: bool = False,
                voices: Sequence[str] = ("af_heart", "bf_emma", "ff_siwis", "ef_dora")) -> Path:
    """A random-weight ONNX graph with the interface of ``onnx-community/Kokoro-82M-v1.0-ONNX``, in its layout.

    ``onnx/model.onnx`` takes ``input_ids`` (int64 [1, T]), ``style`` (float32 [1, 256]) and ``speed`` (float32 [1])
    and gives ``waveform`` (float32 [1, T x 1200]: 50 ms per id, pads included, about real speech's pace); with `durations` also
    ``durations`` (float32 [1, T], a random length per id, as the ``-timestamped`` export gives). ``tokenizer.json``
    holds Kokoro's real vocabulary, ``voices/<name>.bin`` random raw float32 (510, 1, 256) arrays, ``config.json``
    only the model type (as the hub's does).
    """
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    folder = _fresh(folder)
    rng = np.random.default_rng(seed)
    size = max(_KOKORO_IDS) + 1
    table = rng.uniform(-0.6, 0.6, (size, KOKORO_SAMPLES_PER_TOKEN)).astype(np.float32)
    initializers = [numpy_helper.from_array(table, "table"), numpy_helper.from_array(np.array([1, -1], np.int64), "flat"),
                    numpy_helper.from_array(np.array(0.5, np.float32), "half")]
    nodes = [
        helper.make_node("Gather", ["table", "input_ids"], ["sounds"], axis=0),  # [1, T, 600]
        helper.make_node("ReduceMean", ["style"], ["style_mean"], keepdims=1),  # [1, 1]: the voice changes the level
        helper.make_node("Tanh", ["style_mean"], ["style_tanh"]),
        helper.make_node("Mul", ["style_tanh", "half"], ["style_half"]),
        helper.make_node("Add", ["style_half", "half"], ["gain"]),
        helper.make_node("Mul", ["sounds", "gain"], ["scaled"]),
        helper.make_node("Reshape", ["scaled", "flat"], ["waveform"]),
    ]
    outputs = [helper.make_tensor_value_info("waveform", TensorProto.FLOAT, [1, "num_samples"])]
    if durations:
        lengths = rng.uniform(0.5, 3.0, size).astype(np.float32)
        initializers.append(numpy_helper.from_array(lengths, "lengths"))
        nodes.append(helper.make_node("Gather", ["lengths", "input_ids"], ["durations"], axis=0))
        outputs.append(helper.make_tensor_value_info("durations", TensorProto.FLOAT, [1, "sequence_length"]))
    graph = helper.make_graph(nodes, "tiny_kokoro", [
        helper.make_tensor_value_info("input_ids", TensorProto.INT64, [1, "sequence_length"]),
        helper.make_tensor_value_info("style", TensorProto.FLOAT, [1, 256]),
        helper.make_tensor_value_info("speed", TensorProto.FLOAT, [1]),
    ], outputs, initializer=initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="studio.testing")
    onnx.checker.check_model(model)
    (folder / "onnx").mkdir()
    onnx.save(model, str(folder / "onnx" / "model.onnx"))
    (folder / "voices").mkdir()
    for name in voices:
        rng.uniform(-0.3, 0.3, (510, 1, 256)).astype("<f4").tofile(folder / "voices" / f"{name}.bin")
    vocab = {"$": 0, **KOKORO_VOCAB}
    (folder / "tokenizer.json").write_text(json.dumps({"version": "1.0", "model": {"type": "WordLevel", "vocab": vocab,
                                                                                   "unk_token": "$"}},
                                                      ensure_ascii=False), "utf-8")
    (folder / "tokenizer_config.json").write_text(json.dumps({"model_max_length": 512, "pad_token": "$",
                                                              "unk_token": "$"}), "utf-8")
    (folder / "config.json").write_text(json.dumps({"model_type": "style_text_to_speech_2"}), "utf-8")
    return folder


# -- CTC forced aligner ---------------------------------------------------------------------------------------------------
def tiny_ctc_aligner(folder: str | Path, *, seed: int = 0) -> Path:
    """A random-weight ``Wav2Vec2ForCTC`` shaped like the MMS forced aligner (a 320-sample hop: 20 ms frames at
    16 kHz) with its character ``vocab.json`` (``<blank>`` first, then a-z and ``'``), for `studio.voice.ctc`."""
    from transformers import Wav2Vec2Config, Wav2Vec2ForCTC

    folder = _fresh(folder)
    vocab = {"<blank>": 0, **{c: i + 1 for i, c in enumerate("abcdefghijklmnopqrstuvwxyz'")}}
    config = Wav2Vec2Config(vocab_size=len(vocab), pad_token_id=0, hidden_size=16, num_hidden_layers=1,
                            num_attention_heads=2, intermediate_size=32, conv_dim=(8, 8, 8), conv_kernel=(10, 4, 4),
                            conv_stride=(5, 4, 16), num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2)
    with _seeded(seed):
        model = Wav2Vec2ForCTC(config).eval()
    model.save_pretrained(folder)
    (folder / "vocab.json").write_text(json.dumps(vocab), "utf-8")
    return folder


# -- the hub cache ------------------------------------------------------------------------------------------------------
def put_in_hub_cache(folder: str | Path, repo_id: str, cache_dir: str | Path) -> Path:
    """Copy a saved model folder into a Hugging Face hub cache as `repo_id` (``models--org--name/snapshots/<rev>``
    with ``refs/main``), so it loads by hub id with ``HF_HUB_OFFLINE=1``. Returns the snapshot folder."""
    folder = Path(folder)
    revision = hashlib.sha1(repo_id.encode("utf-8")).hexdigest()
    root = Path(cache_dir) / ("models--" + repo_id.replace("/", "--"))
    snapshot = root / "snapshots" / revision
    if snapshot.exists():
        shutil.rmtree(snapshot)
    shutil.copytree(folder, snapshot)
    (root / "refs").mkdir(parents=True, exist_ok=True)
    (root / "refs" / "main").write_text(revision)
    return snapshot


class TinyModels:
    """Tiny models in one folder, each built on first use, and the provider options that run a provider on them.

        tiny = TinyModels(tmp_path)
        writer, _ = studio.providers.create("storyboard", "transformers", **tiny.options("transformers"))

    Providers that need no model (``rules``, ``cards``, ``piper`` ...) get no options; ``openai`` needs a server,
    so it gets none either (tests start one on 127.0.0.1).
    """

    BUILDERS = {"llm": tiny_llm, "bark": tiny_bark, "sd": tiny_sd, "motion_adapter": tiny_motion_adapter,
                "animatediff": tiny_animatediff, "kokoro": tiny_kokoro}

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self._folders: dict[str, Path] = {}

    def folder(self, name: str) -> Path:
        """The folder of tiny model `name` (``llm``, ``bark``, ``sd``, ``motion_adapter``, ``animatediff``,
        ``kokoro``)."""
        if name not in self._folders:
            path = self.root / name
            self._folders[name] = path if (path / "config.json").is_file() or (path / "model_index.json").is_file() \
                else self.BUILDERS[name](path)
        return self._folders[name]

    def options(self, provider: str) -> dict[str, Any]:
        """Options that build `provider` on tiny models, on the CPU, with the fewest steps that exercise it."""
        if provider == "transformers":
            return {"model": str(self.folder("llm")), "device": "cpu", "max_new_tokens": 24, "max_attempts": 2}
        if provider == "bark":
            return {"model": str(self.folder("bark")), "device": "cpu", "voice": BARK_VOICES[0]}
        if provider == "kokoro":
            return {"model": str(self.folder("kokoro")), "device": "cpu"}
        if provider == "diffusers-image":
            return {"model": str(self.folder("sd")), "device": "cpu", "steps": 2}
        if provider == "diffusers-video":
            return {"model": str(self.folder("sd")), "adapter": str(self.folder("motion_adapter")), "device": "cpu",
                    "steps": 2, "frames": 8, "guidance_scale": 1.0}
        return {}

    def preset_models(self) -> dict[str, dict[str, Any]]:
        """A preset's ``[models]`` tables pointing every model provider at a tiny model."""
        return {name: self.options(name) for name in ("transformers", "bark", "diffusers-image", "diffusers-video")}


def use_one_thread() -> None:
    """Run torch on one thread: tiny models are dominated by thread start-up on shared CPUs (10x faster here)."""
    import torch

    torch.set_num_threads(1)


__all__ = ["tiny_llm", "tiny_bark", "tiny_sd", "tiny_motion_adapter", "tiny_animatediff", "clip_tokenizer",
           "put_in_hub_cache", "ScriptedChat", "TinyModels", "use_one_thread", "BARK_VOICES", "BARK_SAMPLE_RATE",
           "TINY_PRESET", "write_tiny_preset", "make_recording"]


# A preset for tests and benchmarks of the job machinery: tiny frames, the fastest encoder settings, offline providers.
TINY_PRESET = """
name = "tiny"
label = "Tiny (tests)"
summary = "96x96 at 12 fps: for tests only"
fps = 12
[resolution]
"16:9" = [128, 72]
"9:16" = [72, 128]
"1:1" = [96, 96]
[video]
encoders = ["libx264"]
[encoder.libx264]
preset = "ultrafast"
crf = 35
[audio]
bitrate_kbps = 32
sample_rate = 16000
[motion]
transition_s = 0.2
[timing]
lead_s = 0.1
tail_s = 0.2
[providers]
storyboard = ["rules"]
narrator = ["espeak"]
painter = ["cards"]
"""


def write_tiny_preset(folder: Path) -> Path:
    """Write `TINY_PRESET` as ``folder/tiny.toml`` (load it with ``studio.load_preset(path)``); returns the path."""
    path = Path(folder) / "tiny.toml"
    path.write_text(TINY_PRESET, "utf-8")
    return path


def uploaded(path: str | Path) -> str:
    """A copy of `path` where Gradio's upload route puts a browser's upload (a fresh folder in Gradio's upload folder),
    as a handler receives it; the studio's upload handlers take only such files (`studio.ui.common.accepted_upload`)."""
    import secrets

    from gradio import utils

    folder = Path(utils.get_upload_folder()) / secrets.token_hex(20)
    folder.mkdir(parents=True)
    target = folder / Path(path).name
    shutil.copyfile(path, target)
    return str(target)


def make_recording(path: str | Path, text: str, *, rate_wpm: int = 130, pad_s: tuple[float, float] = (1.0, 1.5),
                   gain: float = 0.1, sample_rate: int = 44_100, voice: str = "en-us") -> Path:
    """Write a WAV that stands in for a user's own recording of `text`: espeak-ng at `rate_wpm` words a minute (not
    the narrator's rate), scaled by `gain` (a quiet microphone), with `pad_s` seconds of silence before and after
    (what a record button catches around the words), at `sample_rate`. Returns `path`.

    Raises:
        StudioError: espeak-ng is not installed (``apt-get install espeak-ng``).
    """
    import shutil as _shutil
    import subprocess
    import tempfile

    import numpy as np

    from .errors import StudioError
    from .media import read_audio, write_wav

    exe = _shutil.which("espeak-ng")
    if exe is None:
        raise StudioError("make_recording needs espeak-ng: apt-get install espeak-ng")
    path = Path(path)
    with tempfile.TemporaryDirectory(prefix="studio-recording-") as tmp:
        spoken = Path(tmp) / "spoken.wav"
        subprocess.run([exe, "-v", voice, "-s", str(int(rate_wpm)), "-w", str(spoken), "--stdin"], input=text.encode(),
                       check=True, capture_output=True, timeout=120)
        voice_samples = read_audio(spoken, sample_rate)[:, 0] * float(gain)
    before, after = (np.zeros(int(round(s * sample_rate)), np.float32) for s in pad_s)
    write_wav(path, np.concatenate([before, voice_samples, after]), sample_rate)
    return path
