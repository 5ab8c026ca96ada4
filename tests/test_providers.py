"""The provider registry's process-wide model cache, used from many threads at once."""

from __future__ import annotations


def test_the_model_cache_never_frees_a_model_in_use():
    """Threads create and release the same provider with other options at once (as Gradio threads and job workers
    do): a model is released only when no call holds it, and every release happens exactly once."""
    import random
    import threading
    import time

    from studio import providers

    class Model:
        name = "cachetest"
        model = "cachetest-1"
        hooks = frozenset({"release"})

        def __init__(self, size: int) -> None:
            self.size, self.freed, self.lock = size, 0, threading.Lock()

        def use(self) -> None:
            if self.freed:
                raise AssertionError("a released model was used")
            time.sleep(random.uniform(0, 0.003))
            if self.freed:
                raise AssertionError("a model was released while a call used it")

        def release(self) -> None:
            with self.lock:
                self.freed += 1

    made: list[Model] = []

    def factory(size: int = 1) -> Model:
        made.append(Model(size))
        return made[-1]

    providers.register("painter", "cachetest", description="test")(factory)
    errors: list[BaseException] = []

    @providers.leasing
    def step(size: int) -> None:
        model, _ = providers.create("painter", "cachetest", size=size)
        for _ in range(3):
            model.use()

    def worker(seed: int) -> None:
        rng = random.Random(seed)
        try:
            for _ in range(60):
                if rng.random() < 0.1:
                    providers.release("painter", "cachetest")
                else:
                    step(rng.choice([1, 2, 3]))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    try:
        threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert not errors, errors[:3]
        assert len(made) > 3  # models were really replaced and released, many times
        providers.release("painter", "cachetest")
        assert all(m.freed == 1 for m in made), [m.freed for m in made]  # each released once, none twice
    finally:
        providers._REGISTRY["painter"].pop("cachetest", None)


def _provider_classes():
    """Every registered provider's class (found in its factory's module by its registry name)."""
    import importlib
    import inspect

    from studio import providers

    for kind in providers.KINDS:
        for name in providers.names(kind):
            module = importlib.import_module(providers.registration(kind, name).factory.__module__)
            classes = [c for _, c in inspect.getmembers(module, inspect.isclass)
                       if c.__module__ == module.__name__ and getattr(c, "name", None) == name]
            assert len(classes) == 1, (kind, name, classes)
            yield kind, name, classes[0]


def test_every_provider_declares_exactly_the_hooks_it_implements():
    import inspect

    from studio import providers

    main = {"storyboard": "write", "narrator": "speak", "painter": "paint"}
    seen = set()
    for kind, name, cls in _provider_classes():
        seen.add(name)
        hooks = cls.hooks
        assert isinstance(hooks, frozenset) and hooks <= set(providers.HOOKS), (name, hooks)
        params = inspect.signature(getattr(cls, main[kind])).parameters
        assert "cancel" in params, f"{name}.{main[kind]} must take cancel"
        assert ("progress" in hooks) == ("on_progress" in params), name
        for hook in ("variant", "rewrite", "release"):
            assert (hook in hooks) == callable(getattr(cls, hook, None)), (name, hook)
    assert {"rules", "piper", "espeak", "bark", "cards", "local", "diffusers-image", "diffusers-video",
            "transformers", "openai"} <= seen


def test_a_plugin_registers_through_the_entry_point_group(tmp_path, monkeypatch):
    """A third-party package names a module in the `studio.providers` entry-point group; importing it registers."""
    import importlib.metadata as metadata
    import sys

    from studio import providers

    package = tmp_path / "studio_plugin_example.py"
    package.write_text(
        "from studio.providers import register\n"
        "class Quiet:\n"
        "    name = 'quiet'\n    model = 'quiet-1'\n    hooks = frozenset()\n"
        "@register('narrator', 'quiet', check=lambda: 'a plug-in narrator')\n"
        "def quiet():\n    return Quiet()\n")
    dist = tmp_path / "studio_plugin_example-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: studio-plugin-example\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[studio.providers]\nquiet = studio_plugin_example\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert any(p.name == "quiet" for p in metadata.entry_points(group="studio.providers"))
    monkeypatch.setattr(providers, "_ENTRY_POINTS_LOADED", False)
    try:
        providers._load_entry_points()
        assert "quiet" in providers.names("narrator")
        assert providers.choose("narrator", "quiet").reason.startswith("quiet")
    finally:
        providers._REGISTRY["narrator"].pop("quiet", None)
        sys.modules.pop("studio_plugin_example", None)
