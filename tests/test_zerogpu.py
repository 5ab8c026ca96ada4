"""ZeroGPU calls (`studio.zerogpu`): costs, plans and durations, and the calls made through a fake ``spaces``."""

from __future__ import annotations

import logging
import sys
import types
from datetime import timedelta

import pytest

from studio import zerogpu as zg
from studio.errors import Cancelled, ProviderUnavailable
from studio.presets import load_preset
from studio.progress import CancelToken

TIERS = ("draft", "standard", "premium", "maximum")


def ids(count: int) -> list[str]:
    return [f"s{i}" for i in range(1, count + 1)]


class FakeSpaces:
    """A stand-in for the ``spaces`` package: ``GPU(duration=...)`` records what the duration (a number or a callable
    given the function's own arguments, as in ``spaces``) comes to for each call, then runs the function."""

    def __init__(self) -> None:
        self.durations: list[float] = []
        self.decorated = 0
        self.calls: list[list[str]] = []

    def GPU(self, task=None, *, duration=None, size=None):  # noqa: N802 - the package's own name
        def decorate(func):
            self.decorated += 1

            def wrapper(*args, **kwargs):
                value = duration(*args, **kwargs) if callable(duration) else duration
                assert isinstance(value, (int, timedelta)), "spaces takes int seconds or a timedelta"
                self.durations.append(value.total_seconds() if isinstance(value, timedelta) else value)
                self.calls.append(list(args[0]))
                return func(*args, **kwargs)

            return wrapper

        return decorate(task) if callable(task) else decorate


COSTS = [zg.StepCost("narrator", 8.0, 20.0), zg.StepCost("painter", 3.0, 25.0)]


# ------------------------------------------------------------------------------------------------- gpu_seconds


def test_gpu_seconds_load_once_plus_each_scene_with_margin():
    assert zg.gpu_seconds(COSTS, 1) == pytest.approx((45 + 11) * 1.25)
    assert zg.gpu_seconds(COSTS, 4) == pytest.approx((45 + 44) * 1.25)
    assert zg.gpu_seconds(COSTS, 4, margin=1.0) == pytest.approx(89)


def test_gpu_seconds_more_scenes_take_longer():
    seconds = [zg.gpu_seconds(COSTS, n) for n in range(1, 12)]
    assert seconds == sorted(seconds) and len(set(seconds)) == len(seconds)


def test_gpu_seconds_has_a_floor():
    tiny = [zg.StepCost("painter", 0.5, 1.0)]
    assert zg.gpu_seconds(tiny, 1) == 10
    assert zg.gpu_seconds(tiny, 1, floor_s=3) == 3
    assert zg.gpu_seconds(tiny, 1, floor_s=1) == pytest.approx(1.875)


def test_gpu_seconds_is_zero_without_a_gpu_step():
    offline = [zg.StepCost("narrator", 0, 0), zg.StepCost("painter", 0, 0)]
    assert zg.gpu_seconds(offline, 10) == 0
    assert zg.gpu_seconds([], 10) == 0


def test_gpu_seconds_refuses_bad_counts():
    for bad in (-1, 1.5, True):
        with pytest.raises(ValueError):
            zg.gpu_seconds(COSTS, bad)
    with pytest.raises(ValueError):
        zg.gpu_seconds(COSTS, 1, margin=0.5)


def test_step_cost_refuses_negative_or_odd_seconds():
    for bad in (-1, float("nan"), "3", None):
        with pytest.raises(ValueError):
            zg.StepCost("painter", bad, 1)
        with pytest.raises(ValueError):
            zg.StepCost("painter", 1, bad)
    with pytest.raises(Exception):  # frozen
        COSTS[0].load_s = 1


# ------------------------------------------------------------------------------------------------------- costs


def test_costs_on_tiers_video_painter_is_dearer_than_image():
    for tier in ("standard", "premium"):
        image = zg.costs_for(tier, "bark", "diffusers-image")
        video = zg.costs_for(tier, "bark", "diffusers-video")
        assert zg.gpu_seconds(video, 3) > zg.gpu_seconds(image, 3)
        assert video[1].seconds_per_scene > image[1].seconds_per_scene


def test_costs_follow_the_presets_models():
    draft = zg.costs_for("draft", "auto", "auto")          # espeak/piper and SD-Turbo
    standard = zg.costs_for("standard", "auto", "auto")    # Bark-small and SDXL-Turbo
    premium = zg.costs_for("premium", "auto", "auto")      # full Bark and AnimateDiff
    assert not draft[0].needs_gpu and draft[1].needs_gpu
    assert zg.gpu_seconds(draft, 6) < zg.gpu_seconds(standard, 6) < zg.gpu_seconds(premium, 6)
    assert zg.costs_for("premium", "bark", "cards")[0].seconds_per_scene > \
        zg.costs_for("standard", "bark", "cards")[0].seconds_per_scene


def test_costs_for_takes_a_preset_object_or_none():
    preset = load_preset("standard")
    assert zg.costs_for(preset, "bark", "diffusers-image") == zg.costs_for("standard", "bark", "diffusers-image")
    plain = zg.costs_for(None, "bark", "diffusers-image")
    assert plain == [zg.StepCost("narrator", *zg.BUILTIN_COSTS["bark"]),
                     zg.StepCost("painter", *zg.BUILTIN_COSTS["diffusers-image"])]
    assert zg.costs_for(None, "auto", "auto")[1].seconds_per_scene == zg.BUILTIN_COSTS["diffusers-video"][0]


def test_offline_providers_cost_nothing():
    for narrator in ("piper", "espeak"):
        for painter in ("cards", "local"):
            costs = zg.costs_for("standard", narrator, painter, writer="rules")
            assert all(c.seconds_per_scene == 0 and c.load_s == 0 for c in costs)
            assert not zg.needs_gpu(costs)
    assert not zg.costs_for("draft", "espeak", "cards", writer="openai")[0].needs_gpu


def test_writer_costs_a_load_once():
    costs = zg.costs_for("draft", "espeak", "cards", writer="transformers")
    assert [c.step for c in costs] == ["storyboard", "narrator", "painter"]
    assert costs[0].seconds_per_scene == 0 and costs[0].load_s > 0
    assert zg.gpu_seconds(costs, 0) == zg.gpu_seconds(costs, 8) == pytest.approx(20 * 1.25)
    assert zg.costs_for("maximum", "espeak", "cards", writer="auto")[0].load_s > costs[0].load_s


def test_unknown_provider_is_assumed_to_need_the_gpu(caplog):
    with caplog.at_level(logging.WARNING, logger="studio.zerogpu"):
        cost = zg.provider_cost("someones-painter")
    assert (cost.seconds_per_scene, cost.load_s) == zg.UNKNOWN_COST
    assert "someones-painter" in caplog.text


class Catalog:
    """Duck-typed model catalogue: entries with gpu_s_per_scene / load_s, None for what it does not know."""

    def __init__(self, entries):
        self.entries = entries
        self.asked = []

    def for_provider(self, provider, preset):
        self.asked.append((provider, getattr(preset, "name", preset)))
        return self.entries.get(provider)


def test_catalog_is_asked_first_and_falls_back_to_the_table():
    entry = types.SimpleNamespace(gpu_s_per_scene=5.0, load_s=7.0)
    catalog = Catalog({"bark": entry})
    costs = zg.costs_for("standard", "bark", "diffusers-image", catalog)
    assert costs[0] == zg.StepCost("narrator", 5.0, 7.0)
    assert costs[1] == zg.StepCost("painter", *zg.BUILTIN_COSTS["diffusers-image"])  # not in the catalogue
    assert ("bark", "standard") in catalog.asked and ("diffusers-image", "standard") in catalog.asked


def test_catalog_entries_as_mappings_offline_flags_and_lookup_errors():
    class Raising:
        def for_provider(self, provider, preset):
            raise KeyError(provider)

    assert zg.costs_for(None, "bark", "cards", Raising())[0] == zg.StepCost("narrator", *zg.BUILTIN_COSTS["bark"])
    mapping = Catalog({"bark": {"seconds_per_scene": 4, "load_s": 2}})
    assert zg.costs_for(None, "bark", "cards", mapping)[0] == zg.StepCost("narrator", 4.0, 2.0)
    offline = Catalog({"bark": types.SimpleNamespace(gpu=False, gpu_s_per_scene=9, load_s=9)})
    assert not zg.costs_for(None, "bark", "cards", offline)[0].needs_gpu
    with pytest.raises(TypeError):
        zg.costs_for(None, "bark", "cards", object())


# ------------------------------------------------------------------------------------------------------ plans


@pytest.mark.parametrize("count", [1, 2, 3, 4, 5, 7, 9, 13, 24, 50])
def test_plan_keeps_every_scene_once_in_order_within_the_limit(count):
    scenes = ids(count)
    plan = zg.plan_calls(scenes, COSTS, limit_s=120)
    assert [s for chunk in plan for s in chunk] == scenes
    assert all(chunk for chunk in plan)
    assert all(zg.gpu_seconds(COSTS, len(chunk)) <= 120 for chunk in plan)
    sizes = [len(chunk) for chunk in plan]
    assert max(sizes) - min(sizes) <= 1  # as even as the count of calls allows
    assert len(plan) == -(-count // zg.scenes_per_call(COSTS, 120))  # no more calls than needed


def test_plan_splits_when_one_call_would_exceed_the_limit():
    assert zg.gpu_seconds(COSTS, 4) <= 120 < zg.gpu_seconds(COSTS, 5)
    assert zg.plan_calls(ids(4), COSTS, limit_s=120) == [ids(4)]
    assert zg.plan_calls(ids(5), COSTS, limit_s=120) == [ids(3), ["s4", "s5"]]
    assert len(zg.plan_calls(ids(20), COSTS, limit_s=120)) == 5
    assert zg.plan_calls(ids(20), COSTS, limit_s=600) == [ids(20)]


def test_plan_of_nothing_or_offline_steps_is_empty():
    assert zg.plan_calls([], COSTS) == []
    offline = zg.costs_for("standard", "espeak", "cards")
    assert zg.plan_calls(ids(6), offline) == []


def test_a_scene_over_the_limit_gets_its_own_call(caplog):
    heavy = [zg.StepCost("narrator", 12, 30), zg.StepCost("painter", 40, 30)]
    with caplog.at_level(logging.WARNING, logger="studio.zerogpu"):
        plan = zg.plan_calls(ids(3), heavy, limit_s=120)
    assert plan == [["s1"], ["s2"], ["s3"]]
    assert "more than the 120 s" in caplog.text
    assert zg.durations(plan, heavy, 120) == [120.0, 120.0, 120.0]


def test_durations_are_whole_seconds_clamped_to_the_limit():
    plan = zg.plan_calls(ids(5), COSTS, limit_s=120)
    assert zg.durations(plan, COSTS, 120) == [float(-(-((45 + 33) * 1.25) // 1)), float(-(-((45 + 22) * 1.25) // 1))]
    assert all(d == int(d) for d in zg.durations(plan, COSTS, 120))
    assert zg.durations([ids(30)], COSTS, 90) == [90.0]
    assert zg.durations([], COSTS, 90) == []


def test_durations_on_tiers_and_scene_counts():
    for tier in TIERS:
        costs = zg.costs_for(tier, "auto", "auto")
        few, many = zg.durations([ids(1)], costs, 600), zg.durations([ids(4)], costs, 600)
        assert many[0] > few[0]
        for count in (1, 6, 20):
            plan = zg.plan_calls(ids(count), costs, limit_s=120)
            assert all(d <= 120 for d in zg.durations(plan, costs, 120))
            assert sum(len(c) for c in plan) == count


def test_limit_from_the_environment(monkeypatch, caplog):
    assert zg.max_call_s({}) == zg.DEFAULT_MAX_CALL_S == 120
    assert zg.max_call_s({"STUDIO_ZEROGPU_MAX_S": "300"}) == 300
    with caplog.at_level(logging.WARNING, logger="studio.zerogpu"):
        for bad in ("soon", "-5", "0", "inf"):
            assert zg.max_call_s({"STUDIO_ZEROGPU_MAX_S": bad}) == 120
    assert "STUDIO_ZEROGPU_MAX_S" in caplog.text
    monkeypatch.setenv("STUDIO_ZEROGPU_MAX_S", "600")
    assert zg.plan_calls(ids(20), COSTS) == [ids(20)]  # the default limit is read when planning
    monkeypatch.setenv("STUDIO_ZEROGPU_MAX_S", "120")
    assert len(zg.plan_calls(ids(20), COSTS)) == 5
    with pytest.raises(ValueError):
        zg.plan_calls(ids(2), COSTS, limit_s=0)


# ------------------------------------------------------------------------------------------------------ calls


def test_gpu_calls_ask_for_the_planned_durations():
    fake = FakeSpaces()
    seen = []
    results = zg.run_in_gpu_calls(lambda chunk: seen.append(chunk) or len(chunk), ids(10), COSTS,
                                  spaces_module=fake, limit_s=120)
    plan = zg.plan_calls(ids(10), COSTS, limit_s=120)
    assert seen == fake.calls == plan
    assert fake.durations == zg.durations(plan, COSTS, 120)
    assert all(isinstance(d, int) for d in fake.durations)  # what spaces sends is whole seconds
    assert results == [len(chunk) for chunk in plan]
    assert fake.decorated == 1


def test_gpu_call_durations_follow_the_chunk_given():
    fake = FakeSpaces()
    zg.run_in_gpu_calls(lambda chunk: None, ids(5), COSTS, spaces_module=fake, limit_s=120)
    assert [len(c) for c in fake.calls] == [3, 2]
    assert fake.durations == [98, 84]  # ceil((45 + 33) * 1.25), ceil((45 + 22) * 1.25)


def test_offline_only_makes_no_gpu_call():
    fake = FakeSpaces()
    work = []
    assert zg.run_in_gpu_calls(work.append, ids(4), zg.costs_for("standard", "espeak", "cards"),
                               spaces_module=fake) == []
    assert fake.decorated == 0 and fake.durations == [] and work == []
    assert zg.run_in_gpu_calls(work.append, [], COSTS, spaces_module=fake) == []
    assert fake.decorated == 0


def test_progress_per_call():
    reports = []
    zg.run_in_gpu_calls(lambda chunk: None, ids(10), COSTS, spaces_module=FakeSpaces(), limit_s=120,
                        on_progress=lambda fraction, message: reports.append((fraction, message)))
    assert [m for _, m in reports[:3]] == ["GPU call 1/3: scenes 1-4", "GPU call 2/3: scenes 5-7",
                                           "GPU call 3/3: scenes 8-10"]
    fractions = [f for f, _ in reports]
    assert fractions == sorted(fractions) and fractions[0] == 0 and fractions[-1] == 1.0


def test_progress_names_a_single_scene_and_an_oversized_one():
    reports = []
    heavy = [zg.StepCost("painter", 200, 0)]
    zg.run_in_gpu_calls(lambda chunk: None, ids(2), heavy, spaces_module=FakeSpaces(), limit_s=120,
                        on_progress=lambda fraction, message: reports.append(message))
    assert reports[0].startswith("GPU call 1/2: scene 1 (") and "120 s" in reports[0]


def test_cancel_between_calls_raises_after_the_current_call():
    token = CancelToken()
    fake = FakeSpaces()
    done = []

    def work(chunk):
        done.append(chunk)
        if len(done) == 1:
            token.cancel()  # the user cancels while the first call runs
        return chunk

    with pytest.raises(Cancelled):
        zg.run_in_gpu_calls(work, ids(10), COSTS, spaces_module=fake, limit_s=120, cancel=token)
    assert done == [ids(4)] and len(fake.durations) == 1


def test_cancel_before_the_first_call_makes_none():
    token = CancelToken()
    token.cancel()
    fake = FakeSpaces()
    with pytest.raises(Cancelled):
        zg.run_in_gpu_calls(lambda chunk: None, ids(3), COSTS, spaces_module=fake, cancel=token)
    assert fake.durations == []


def test_cancel_during_the_last_call_still_raises():
    token = CancelToken()
    with pytest.raises(Cancelled):
        zg.run_in_gpu_calls(lambda chunk: token.cancel(), ids(2), COSTS, spaces_module=FakeSpaces(), cancel=token)


def test_without_the_spaces_package(monkeypatch):
    monkeypatch.setitem(sys.modules, "spaces", None)  # import spaces fails
    with pytest.raises(ProviderUnavailable, match="spaces"):
        zg.run_in_gpu_calls(lambda chunk: None, ids(2), COSTS)
    assert zg.run_in_gpu_calls(lambda chunk: None, ids(2), zg.costs_for(None, "espeak", "cards")) == []


def test_the_spaces_package_is_imported_when_not_given(monkeypatch):
    fake = FakeSpaces()
    module = types.ModuleType("spaces")
    module.GPU = fake.GPU
    monkeypatch.setitem(sys.modules, "spaces", module)
    assert zg.run_in_gpu_calls(lambda chunk: chunk, ids(2), COSTS, limit_s=120) == [ids(2)]
    assert fake.durations == [zg.durations([ids(2)], COSTS, 120)[0]]


# ------------------------------------------------------------------------------------------------- on_zerogpu


@pytest.mark.parametrize("value, expected", [
    ("true", True), ("True", True), ("1", True), ("t", True), ("TRUE", True),
    ("false", False), ("0", False), ("", False), ("no", False), ("yes", False),
])
def test_on_zerogpu_reads_the_env_as_spaces_does(monkeypatch, value, expected):
    monkeypatch.setitem(sys.modules, "spaces", types.ModuleType("spaces"))
    assert zg.on_zerogpu({"SPACES_ZERO_GPU": value}) is expected


def test_on_zerogpu_needs_the_variable_and_the_package(monkeypatch):
    monkeypatch.setitem(sys.modules, "spaces", types.ModuleType("spaces"))
    assert zg.on_zerogpu({}) is False
    assert zg.on_zerogpu({"SPACE_ID": "me/studio"}) is False  # a Space, but not on ZeroGPU hardware
    monkeypatch.setitem(sys.modules, "spaces", None)  # not importable
    assert zg.on_zerogpu({"SPACES_ZERO_GPU": "true"}) is False


def test_on_zerogpu_finds_an_installed_package(monkeypatch, tmp_path):
    monkeypatch.delitem(sys.modules, "spaces", raising=False)
    assert zg.on_zerogpu({"SPACES_ZERO_GPU": "true"}) is False  # not installed here
    (tmp_path / "spaces").mkdir()
    (tmp_path / "spaces" / "__init__.py").write_text("raise RuntimeError('must not be imported')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert zg.on_zerogpu({"SPACES_ZERO_GPU": "1"}) is True
    assert "spaces" not in sys.modules


def test_on_zerogpu_reads_the_process_environment_by_default(monkeypatch):
    monkeypatch.setitem(sys.modules, "spaces", types.ModuleType("spaces"))
    monkeypatch.delenv("SPACES_ZERO_GPU", raising=False)
    assert zg.on_zerogpu() is False
    monkeypatch.setenv("SPACES_ZERO_GPU", "true")
    assert zg.on_zerogpu() is True


# ------------------------------------------------------------------------------------------------------ README


def test_readme_preloads_the_draft_and_standard_models():
    """The Space's front matter preloads every hub model the Draft and Standard presets name (a preset model that is
    not a hub id, such as a local folder, is not checked; catalogue names are hub ids once the preset is loaded)."""
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "README.md").read_text("utf-8")
    front = text.split("---\n")[1]
    lines = front.splitlines()
    start = lines.index("preload_from_hub:")
    items = []
    for line in lines[start + 1:]:
        if not line.startswith("  - "):
            break
        items.append(line[4:].split()[0])
    assert "suggested_hardware: zero-a10g" in lines
    for tier in ("draft", "standard"):
        for provider, options in load_preset(tier).models.items():
            model = options.get("model")
            if isinstance(model, str) and model.count("/") == 1 and not model.startswith((".", "/", "~")):
                assert model in items, f"{tier}'s [models.{provider}] {model} is not in preload_from_hub"
