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
