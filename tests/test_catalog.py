"""The model catalogue (studio/models.toml), presets naming its models, and fetching them (studio.model_store, the
`models` command) from a hub stand-in on 127.0.0.1 (tests/hub_standin.py): nothing comes from the real hub."""

from __future__ import annotations

import json
import os
import shutil
import socket
import tomllib
from dataclasses import replace
from pathlib import Path

import pytest

from studio import Cancelled, StudioError, load_preset, model_store, providers
from studio.catalog import CATALOG_FILE, LICENCES, OPTIONS, licence_problems, load_catalog, parse_catalog
from studio.cli import main
from studio.presets import PRESETS_DIR, TIERS
from studio.progress import CancelToken

from .hub_standin import HubStandin, serving_hub

SD_EXTRAS = {  # what the real sd-turbo repo has beside the files the painter needs: all must be skipped
    "sd_turbo.safetensors": b"s" * 30_000,
    "unet/diffusion_pytorch_model.safetensors": b"f" * 20_000,  # the other precision
    "unet/diffusion_pytorch_model.fp16.bin": b"b" * 40_000,
    "flax_model.msgpack": b"m" * 5_000,
    "vae_decoder/model.onnx": b"o" * 3_000,
    "README.md": b"# sd-turbo\n",
}


# -- the catalogue ---------------------------------------------------------------------------------------------------
def test_the_catalogue_loads_and_finds_models_by_name_or_repo():
    catalog = load_catalog()
    assert load_catalog() is catalog  # cached
    assert len(catalog) >= 15
    entry = catalog.get("qwen3-0.6b")
    assert entry.repo == "Qwen/Qwen3-0.6B" and entry.revision == "main" and entry.licence == "apache-2.0"
    assert catalog.get("qwen/qwen3-0.6b") is entry and "Qwen/Qwen3-0.6B" in catalog
    assert not catalog.get("sd-turbo").commercial and "non-commercial" in catalog.get("sd-turbo").flags
    assert catalog.get("black-forest-labs/FLUX.1-schnell").licence == "apache-2.0"
    assert catalog.get("suno/bark").licence == "mit" and catalog.get("bark-small").licence == "mit"
    assert not catalog.get("wan2.1-t2v-1.3b").supported and "WanPipeline" in catalog.get("wan2.1-t2v-1.3b").loader
    with pytest.raises(StudioError, match="not in the model catalogue.*qwen3-0.6b"):
        catalog.get("no-such-model")
    for e in catalog:
        assert e.licence in LICENCES and e.download_bytes > 0 and e.allow_patterns and e.why


def _catalogue_data() -> dict:
    return tomllib.loads(CATALOG_FILE.read_text("utf-8"))


@pytest.mark.parametrize("edit, message", [
    (lambda m: m["sd-turbo"].update(licence="wtfpl"), "'sd-turbo': unknown licence 'wtfpl'"),
    (lambda m: m["sd-turbo"].update(download_bytes=0), "'sd-turbo': `download_bytes` must be a positive"),
    (lambda m: m["sd-turbo"].update(allow_patterns=[]), "'sd-turbo': `allow_patterns` must list"),
    (lambda m: m["bark"].update(step="painting"), "'bark': unknown step 'painting'"),
    (lambda m: m["bark"].update(provider="piper"), "'bark': unknown provider 'piper'"),
    (lambda m: m["bark"].update(provider="transformers"), "'bark': provider transformers is a storyboard"),
    (lambda m: m["bark"].pop("licence_url"), "'bark': `licence_url` is missing"),
    (lambda m: m["bark"].update(cpu_ok="yes"), "'bark': `cpu_ok` must be bool"),
    (lambda m: m["bark"].update(colour="red"), "'bark': unknown field"),
    (lambda m: m.update(BARK=dict(m["bark"])), "the name 'BARK' is used twice"),
    (lambda m: m.update(bark2=dict(m["bark"])), "are the same repo suno/bark"),
    (lambda m: m["ltx-video"].pop("loader"), "`supported = false` needs `loader`"),
])
def test_a_bad_catalogue_entry_is_refused_naming_it(edit, message):
    data = _catalogue_data()
    edit(data["models"])
    with pytest.raises(StudioError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_catalog(data)


# -- presets name catalogue models -------------------------------------------------------------------------------------
def _named_models(tier: str) -> list[tuple[str, str, str]]:
    """(provider, option, value as written) of a shipped preset's [models] tables."""
    data = tomllib.loads((PRESETS_DIR / f"{tier}.toml").read_text("utf-8"))
    return [(provider, key, value) for provider, options in data.get("models", {}).items()
            for key, value in options.items() if key in OPTIONS]


@pytest.mark.parametrize("tier", TIERS)
def test_every_presets_model_is_in_the_catalogue(tier):
    catalog = load_catalog()
    preset = load_preset(tier)
    for provider, option, value in _named_models(tier):
        entry = catalog.get(value)  # written as a catalogue name ...
        assert entry.name == value and entry.provider == provider and entry.option == option and entry.supported
        assert preset.models[provider][option] == entry.repo  # ... and resolved to the hub id on load
    assert {e.name for e in catalog.for_preset(preset)} == {v for _, _, v in _named_models(tier)}


@pytest.mark.parametrize("tier", TIERS)
def test_a_preset_using_non_commercial_weights_declares_it(tier):
    """Fails when a shipped preset's default model is flagged non-commercial in the catalogue and the preset does not
    say `non_commercial_ok = true`."""
    assert licence_problems(load_preset(tier)) == []


def test_an_undeclared_non_commercial_model_is_a_licence_problem(tmp_path, caplog):
    text = (PRESETS_DIR / "draft.toml").read_text("utf-8").replace("non_commercial_ok = true\n", "")
    (tmp_path / "mine.toml").write_text(text, "utf-8")
    preset = load_preset(tmp_path / "mine.toml")
    problems = licence_problems(preset)
    assert len(problems) == 1 and "sd-turbo" in problems[0] and "sai-nc-community" in problems[0]
    assert "non_commercial_ok" in caplog.text  # and loading it warns
    for tier in ("premium", "maximum"):  # the commercial-safe tiers need no declaration
        assert not load_preset(tier).non_commercial_ok


def test_a_preset_may_still_give_a_hub_id_or_a_folder_but_not_a_model_without_provider(tmp_path):
    base = (PRESETS_DIR / "draft.toml").read_text("utf-8")
    (tmp_path / "hub.toml").write_text(base.replace('model = "qwen3-0.6b"', 'model = "org/my-llm"'), "utf-8")
    assert load_preset(tmp_path / "hub.toml").models["transformers"]["model"] == "org/my-llm"
    (tmp_path / "llm").mkdir()
    (tmp_path / "folder.toml").write_text(base.replace('model = "qwen3-0.6b"', f'model = "{tmp_path / "llm"}"'))
    assert load_preset(tmp_path / "folder.toml").models["transformers"]["model"] == str(tmp_path / "llm")
    (tmp_path / "wan.toml").write_text(base.replace('model = "sd-turbo"', 'model = "sdxl-lightning"'))
    with pytest.raises(StudioError, match="'sdxl-lightning' has no Studio provider yet.*StableDiffusionXLPipeline"):
        load_preset(tmp_path / "wan.toml")
    (tmp_path / "wrong.toml").write_text(base.replace('model = "sd-turbo"', 'model = "qwen3-0.6b"'))
    with pytest.raises(StudioError, match="transformers `model`, not a diffusers-image `model`"):
        load_preset(tmp_path / "wrong.toml")


# -- the hub stand-in and pulling --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def sd_fp16(tmp_path_factory):
    """A tiny Stable Diffusion pipeline laid out as sd-turbo's fp16 files (weights named *.fp16.safetensors)."""
    from studio import testing

    folder = tmp_path_factory.mktemp("sd-fp16") / "sd"
    shutil.copytree(testing.tiny_sd(tmp_path_factory.mktemp("sd") / "sd"), folder)
    for weights in folder.rglob("*.safetensors"):
        weights.rename(weights.with_name(weights.name.replace(".safetensors", ".fp16.safetensors")))
    return folder


@pytest.fixture
def hub(monkeypatch, tmp_path):
    """A started hub stand-in, HF_ENDPOINT pointing at it, an empty hub cache in tmp_path and no token."""
    with serving_hub(monkeypatch, tmp_path) as standin:
        yield standin


def _llm_entry(repo: str, **changes):
    return replace(load_catalog().get("qwen3-0.6b"), name=repo.split("/")[1], repo=repo, **changes)


def _resolves(standin: HubStandin) -> set[str]:
    return {path.split("/resolve/main/", 1)[1] for method, path, _ in standin.requests
            if method == "GET" and "/resolve/" in path}


def test_pull_fetches_only_the_allow_listed_files_and_the_painter_finds_them(hub, sd_fp16):
    hub.add_repo("stabilityai/sd-turbo", sd_fp16, extra=SD_EXTRAS)
    entry = load_catalog().get("sd-turbo")
    assert model_store.status(entry).state == "missing"
    seen = []
    folder = model_store.pull(entry, on_progress=lambda done, total, message: seen.append((done, total)))
    wanted = {p.relative_to(sd_fp16).as_posix() for p in sd_fp16.rglob("*") if p.is_file()}
    assert {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()} == wanted
    assert {k.split("/", 2)[2] for k in hub.bytes_served} == wanted  # nothing of SD_EXTRAS was fetched
    assert seen[-1][0] == seen[-1][1] == sum((sd_fp16 / p).stat().st_size for p in wanted)
    assert all(a[0] <= b[0] for a, b in zip(seen, seen[1:]))
    here = model_store.status(entry)
    assert here.state == "present" and here.exact and here.folder == folder
    # find_weights (and so doctor and auto) now find it where the hub cache is
    rows = {name: (ok, note) for name, ok, note in providers.availability(
        "painter", configs={"diffusers-image": {"model": "stabilityai/sd-turbo", "device": "cpu"}})}
    assert rows["diffusers-image"][0], rows["diffusers-image"]
    assert "stabilityai/sd-turbo" in rows["diffusers-image"][1] and "hub cache" in rows["diffusers-image"][1]
    # a second pull fetches nothing
    before = sum(hub.bytes_served.values())
    assert model_store.pull(entry) == folder and sum(hub.bytes_served.values()) == before


def test_a_dropped_connection_is_resumed_with_a_range_request(hub, tmp_path, monkeypatch):
    big = os.urandom(3_000_000)
    hub.add_repo("org/flaky", extra={"config.json": b"{}", "model.safetensors": big,
                                     "pytorch_model.bin": big[:500_000]}, drop_once={"model.safetensors"})
    entry = _llm_entry("org/flaky")
    folder = model_store.pull(entry)  # resumed within the pull
    assert (folder / "model.safetensors").read_bytes() == big and not (folder / "pytorch_model.bin").exists()
    assert hub.bytes_served["org/flaky/model.safetensors"] < 2 * len(big)
    assert any(r and r.startswith("bytes=") and p.endswith("model.safetensors") for _, p, r in hub.requests)

    # the connection keeps dropping: the pull stops with one line, keeps the part, and the next pull finishes it
    model_store.remove(entry)
    monkeypatch.setattr(model_store, "RETRIES", 0)
    hub.repos["org/flaky"].drop_once.add("model.safetensors")
    hub.bytes_served.clear()
    with pytest.raises(StudioError, match="broke off.*run the same pull again") as failed:
        model_store.pull(entry)
    assert "\n" not in str(failed.value)
    partial = model_store.status(entry)
    assert partial.state == "partial" and 0 < partial.bytes_here < partial.bytes_needed
    folder = model_store.pull(entry)
    assert (folder / "model.safetensors").read_bytes() == big
    assert hub.bytes_served["org/flaky/model.safetensors"] < 2 * len(big)


def test_a_cancelled_pull_keeps_what_it_fetched_and_status_goes_missing_partial_present(hub, monkeypatch):
    big = os.urandom(2_000_000)
    hub.add_repo("org/big", extra={"config.json": b'{"a": 1}', "model.safetensors": big, "vocab.json": b"{}"})
    entry = _llm_entry("org/big")
    monkeypatch.setattr(model_store, "CHUNK_BYTES", 65536)
    cancel = CancelToken()

    def stop_half_way(done, total, message):
        if done > total // 2:
            cancel.cancel()

    assert model_store.status(entry).state == "missing"
    with pytest.raises(Cancelled):
        model_store.pull(entry, on_progress=stop_half_way, cancel=cancel)
    assert model_store.status(entry).state == "partial"
    assert list((hub.cache / "models--org--big" / "blobs").glob("*.incomplete"))
    folder = model_store.pull(entry)
    assert model_store.status(entry).state == "present" and (folder / "model.safetensors").read_bytes() == big
    assert hub.bytes_served["org/big/model.safetensors"] < 1.5 * len(big)


def test_pull_refuses_when_the_disk_is_too_full_before_fetching(hub, monkeypatch):
    hub.add_repo("org/roomy", extra={"config.json": b"{}", "model.safetensors": b"w" * 50_000})
    entry = _llm_entry("org/roomy")
    monkeypatch.setattr(model_store.shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10**12, 10**12, 1000))
    with pytest.raises(StudioError, match=r"not enough disk space for roomy .*0\.0 GB free, 0\.0 GB needed"):
        model_store.pull(entry)
    assert not _resolves(hub)


def test_a_big_download_needs_a_yes(hub, monkeypatch):
    hub.add_repo("org/bulky", extra={"config.json": b"{}", "model.safetensors": b"w" * 50_000})
    monkeypatch.setattr(model_store, "CONFIRM_BYTES", 10_000)
    with pytest.raises(StudioError, match="is a 0.0 GB download: confirm it"):
        model_store.pull(_llm_entry("org/bulky"))
    assert model_store.pull(_llm_entry("org/bulky"), yes=True).is_dir()


def test_a_gated_repo_names_its_licence_page_and_hf_token(hub, monkeypatch):
    hub.add_repo("org/gated", extra={"config.json": b"{}", "model.safetensors": b"g" * 4000}, gated=True,
                 tokens={"hf_good"})
    entry = _llm_entry("org/gated", gated=True)
    assert model_store.status(entry).state == "gated"  # the catalogue says so and no token is set
    with pytest.raises(StudioError, match=r"org/gated is gated.*https://huggingface.co/org/gated.*HF_TOKEN") as no:
        model_store.pull(entry)
    assert "\n" not in str(no.value)
    with pytest.raises(StudioError, match=r"https://huggingface.co/org/gated.*HF_TOKEN is not allowed"):
        model_store.pull(entry, token="hf_bad")
    monkeypatch.setenv("HF_TOKEN", "hf_bad")
    with pytest.raises(StudioError, match="HF_TOKEN is not allowed"):
        model_store.pull(replace(entry, gated=False))  # a repo the catalogue did not know was gated
    assert model_store.status(entry).state == "gated"  # known from the failed pull
    assert model_store.pull(entry, token="hf_good").is_dir()
    assert model_store.status(entry).state == "present"


def test_an_unreachable_hub_is_one_line(hub, monkeypatch, capsys):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    with pytest.raises(StudioError, match=f"cannot reach the model hub at http://127.0.0.1:{port}") as failed:
        model_store.pull(load_catalog().get("sd-turbo"))
    assert "\n" not in str(failed.value)
    assert main(["models", "pull", "sd-turbo"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: cannot reach the model hub") and "\n" not in err and "Traceback" not in err


def test_a_repo_missing_on_the_hub_is_one_line(hub):
    with pytest.raises(StudioError, match="org/nothing was not found on the hub"):
        model_store.pull(_llm_entry("org/nothing"))


def test_remove_frees_the_model(hub, sd_fp16):
    hub.add_repo("stabilityai/sd-turbo", sd_fp16, extra=SD_EXTRAS)
    entry = load_catalog().get("sd-turbo")
    model_store.pull(entry)
    size = model_store.status(entry).bytes_here
    assert model_store.remove(entry) >= size > 0
    assert model_store.status(entry).state == "missing" and not (hub.cache / "models--stabilityai--sd-turbo").exists()
    assert model_store.remove(entry) == 0


def test_the_models_command_lists_pulls_and_removes(hub, sd_fp16, capsys):
    hub.add_repo("stabilityai/sd-turbo", sd_fp16, extra=SD_EXTRAS)
    assert main(["models", "list", "--json"]) == 0
    rows = {row["name"]: row for row in json.loads(capsys.readouterr().out)}
    assert rows["sd-turbo"]["status"] == "missing" and "non-commercial" in rows["sd-turbo"]["flags"]
    assert rows["sd-turbo"]["presets"] == ["draft"] and rows["bark"]["presets"] == ["premium", "maximum"]
    assert main(["models", "list", "--preset", "draft"]) == 0
    out = capsys.readouterr().out
    assert "qwen3-0.6b" in out and "sd-turbo" in out and "bark " not in out and "(non-commercial)" in out
    assert main(["models", "pull", "sd-turbo"]) == 0
    captured = capsys.readouterr()
    assert "sd-turbo: ready in" in captured.out and "licence sai-nc-community, non-commercial" in captured.out
    assert "MB/s" in captured.err and "ETA" in captured.err and "100.0%" in captured.err
    assert main(["models", "pull", "sd-turbo"]) == 0 and "already here" in capsys.readouterr().out
    assert main(["models", "list", "--json"]) == 0
    assert {r["name"]: r for r in json.loads(capsys.readouterr().out)}["sd-turbo"]["status"] == "present"
    assert main(["doctor", "--preset", "draft"]) == 0
    out = capsys.readouterr().out
    assert "ok  diffusers-image stabilityai/sd-turbo" in out and "sd-turbo (2.6 GB, sai-nc-community" in out
    assert main(["models", "remove", "sd-turbo"]) == 0 and "freed" in capsys.readouterr().out
    assert main(["models", "pull", "no-such-model"]) == 2
    assert capsys.readouterr().err.startswith("error: 'no-such-model' is not in the model catalogue")
    assert main(["models", "pull"]) == 2 and "give a model NAME or --preset" in capsys.readouterr().err


def test_the_models_command_asks_before_a_big_download(hub, monkeypatch, capsys):
    hub.add_repo("Qwen/Qwen3-0.6B", extra={"config.json": b"{}", "model.safetensors": b"q" * 30_000})
    monkeypatch.setattr(model_store, "CONFIRM_BYTES", 1000)
    monkeypatch.setattr("sys.stdin.isatty", lambda: False, raising=False)
    assert main(["models", "pull", "qwen3-0.6b"]) == 2
    assert "confirm the download with --yes" in capsys.readouterr().err
    assert main(["models", "pull", "qwen3-0.6b", "--yes"]) == 0
    assert model_store.status(load_catalog().get("qwen3-0.6b")).state == "present"


def test_the_standin_speaks_the_hubs_protocol_to_huggingface_hub_itself(hub, sd_fp16):
    """huggingface_hub's own snapshot_download fetches from the stand-in, and `status` reads what it wrote."""
    from huggingface_hub import snapshot_download

    hub.add_repo("stabilityai/sd-turbo", sd_fp16, extra=SD_EXTRAS)
    entry = load_catalog().get("sd-turbo")
    folder = snapshot_download(entry.repo, allow_patterns=list(entry.allow_patterns), cache_dir=hub.cache,
                               endpoint=hub.url)
    assert (Path(folder) / "unet" / "diffusion_pytorch_model.fp16.safetensors").is_file()
    assert model_store.status(entry).state == "present"


def test_a_render_downloads_on_first_use_only_when_asked_and_then_paints_with_the_model(hub, sd_fp16, tmp_path,
                                                                                         monkeypatch):
    """`make_video(download=True)` (render --download, STUDIO_DOWNLOAD_MODELS=1) pulls the model `auto` would take
    if it were here, then auto uses it; without the opt-in nothing is fetched and auto goes on with title cards."""
    from studio import downloads
    from studio.pipeline import make_video
    from studio.presets import load_preset
    from studio.storyboard import write_storyboard

    hub.add_repo("stabilityai/sd-turbo", sd_fp16, extra=SD_EXTRAS)
    draft = load_preset("draft")
    entry = load_catalog().get("sd-turbo")
    assert [e.name for e in downloads.wanted_for_run(draft, narrator=None, painter="auto", device="cpu")] == ["sd-turbo"]
    assert downloads.wanted_for_run(draft, narrator=None, painter="cards", device="cpu") == []  # named offline
    monkeypatch.delenv("STUDIO_DOWNLOAD_MODELS", raising=False)
    monkeypatch.delenv("SPACE_ID", raising=False)
    project = write_storyboard("A red kite over the hill.", mode="script")

    plain = make_video(project, preset=draft, output=tmp_path / "plain.mp4", narrator="espeak")
    assert not hub.bytes_served and model_store.status(entry).state == "missing"  # nothing unrequested
    assert any(n.startswith("painter: cards") for n in plain.project.notes)

    fetched = make_video(project, preset=draft, output=tmp_path / "fetched.mp4", narrator="espeak", download=True)
    assert model_store.status(entry).state == "present"
    assert any(n.startswith("painter: diffusers-image") for n in fetched.project.notes), fetched.project.notes
