"""The ``transformers`` storyboard writer: any causal language model, by hub id or local folder, run in-process.

An instruction-tuned chat model is the intended use (e.g. ``Qwen/Qwen2.5-1.5B-Instruct``, a small Llama or Phi): its
own chat template formats the conversation. The weights must be on this machine (the hub cache or a folder saved with
``save_pretrained``); nothing is downloaded while writing. Prompting, JSON checking and retries are in `_llm`.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from .. import devices
from ..errors import ProviderUnavailable, StudioError
from ..progress import CancelToken, check
from ..providers import register
from ..weights import LocalWeights, find_weights
from ._llm import ChatWriter, Messages

log = logging.getLogger("studio")

DEFAULT_MODEL = "Qwen/Qwen2.5-1.5B-Instruct"
# Above this many parameters a model is not run on a CPU unless asked for (`device="cpu"`): it would take minutes.
CPU_MAX_PARAMETERS = 4_000_000_000


def _check(model: str = DEFAULT_MODEL, device: str | None = None, cache_dir: str | None = None) -> str:
    """Cheap: transformers installed, the weights on this machine, and a device that runs them in reasonable time."""
    build = devices.torch_build()
    if not build["installed"]:
        raise ProviderUnavailable("torch is not installed: pip install torch transformers")
    import importlib.util

    if importlib.util.find_spec("transformers") is None:
        raise ProviderUnavailable("transformers is not installed: pip install transformers")
    found = find_weights(model, layout="transformers", cache_dir=cache_dir,
                         extra_files=("tokenizer.json|tokenizer.model|vocab.json|tokenizer_config.json",))
    devices.check_device(device)
    where = device or devices.best_device()
    if where == "cpu" and device is None and found.parameters > CPU_MAX_PARAMETERS:
        raise ProviderUnavailable(f"{found.describe()} is too large to write on a CPU in reasonable time and no GPU "
                                  "is here; pass device='cpu' to run it anyway, or choose a smaller model")
    placed = devices.check_gpu_memory(where, found.loaded_bytes(2), forced=device is not None, what=found.model)
    return f"{found.describe()} {placed}"


@register("storyboard", "transformers", check=_check,
          description="A local causal LM (transformers), e.g. Qwen2.5-Instruct: writes scripts from briefs")
def transformers_writer(model: str = DEFAULT_MODEL, device: str | None = None, dtype: str | None = None,
                        max_new_tokens: int = 1200, temperature: float = 0.7, max_attempts: int = 3, seed: int = 0,
                        cache_dir: str | None = None) -> "TransformersWriter":
    """A storyboard writer running a causal LM in-process.

    Args:
        model: Hub id (in the local hub cache) or a folder saved with ``save_pretrained``.
        device: ``cuda``, ``mps``, ``cpu``; None picks the best here.
        dtype: ``float16``, ``bfloat16`` or ``float32``; None: half precision on a GPU, float32 on the CPU.
        max_new_tokens: Longest answer, in tokens.
        temperature: Sampling temperature (0 for greedy decoding).
        max_attempts: How many answers to ask for before giving up on an unusable one.
        seed: Seed for sampling, so the same brief gives the same storyboard.
        cache_dir: The hub cache to load from (default: ``HF_HUB_CACHE``).
    """
    if not isinstance(max_attempts, int) or not 1 <= max_attempts <= 10:
        raise StudioError(f"`max_attempts` must be a whole number from 1 to 10, got {max_attempts!r}")
    if not isinstance(max_new_tokens, int) or not 16 <= max_new_tokens <= 32768:
        raise StudioError(f"`max_new_tokens` must be a whole number from 16 to 32768, got {max_new_tokens!r}")
    if not 0.0 <= float(temperature) <= 2.0:
        raise StudioError(f"`temperature` must be between 0 and 2, got {temperature!r}")
    found = find_weights(model, layout="transformers", cache_dir=cache_dir)
    return TransformersWriter(found, device=devices.check_device(device), dtype=dtype, max_new_tokens=max_new_tokens,
                              temperature=float(temperature), max_attempts=max_attempts, seed=seed,
                              cache_dir=cache_dir)


class _StopOnCancel:
    """A stopping criterion that ends generation as soon as the token is cancelled (checked every token)."""

    def __init__(self, cancel: CancelToken | None) -> None:
        self.cancel = cancel

    def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
        import torch

        stop = bool(self.cancel is not None and self.cancel.cancelled)
        return torch.full((input_ids.shape[0],), stop, dtype=torch.bool, device=input_ids.device)


class TransformersWriter(ChatWriter):
    """Writes storyboards with a local causal LM; the model loads on first use and stays until `release()`."""

    name = "transformers"
    hooks = frozenset({"rewrite", "release"})  # optional hooks it implements (studio.providers.HOOKS)

    def __init__(self, weights: LocalWeights, *, device: str | None, dtype: str | None, max_new_tokens: int,
                 temperature: float, max_attempts: int, seed: int, cache_dir: str | None) -> None:
        self.weights = weights
        self.model = weights.model
        self.device = device
        self.dtype = dtype
        self.max_new_tokens = max_new_tokens
        self.temperature = temperature
        self.max_attempts = max_attempts
        self.seed = seed
        self.cache_dir = cache_dir
        self._lm: Any = None
        self._tokenizer: Any = None
        self._lock = threading.Lock()
        self.calls = 0

    def load(self) -> None:
        """Load the tokenizer and the model (once)."""
        with self._lock:
            if self._lm is not None:
                return
            from transformers import AutoModelForCausalLM, AutoTokenizer

            device = devices.choose_device(self.device)
            dtype = devices.choose_dtype(device, self.dtype)
            source = str(self.weights.folder)
            try:
                tokenizer = AutoTokenizer.from_pretrained(source)
                lm = AutoModelForCausalLM.from_pretrained(source, dtype=dtype)
            except (OSError, ValueError) as exc:
                raise StudioError(f"cannot load the language model {self.model}: {exc}") from exc
            lm.to(device).eval()
            self._tokenizer, self._lm, self.device = tokenizer, lm, device
            log.info("transformers writer: %s loaded on %s (%s)", self.model, device, dtype)

    def _prompt_ids(self, messages: Messages) -> Any:
        tokenizer = self._tokenizer
        if getattr(tokenizer, "chat_template", None):
            encoded = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt",
                                                    return_dict=True)
            return encoded["input_ids"], encoded.get("attention_mask")
        # A base model without a chat template: a plain transcript that ends where the assistant speaks.
        text = "".join(f"{m['role'].title()}: {m['content']}\n\n" for m in messages) + "Assistant:"
        encoded = tokenizer(text, return_tensors="pt")
        return encoded["input_ids"], encoded.get("attention_mask")

    def chat(self, messages: Messages, *, schema: dict[str, Any] | None = None,
             cancel: CancelToken | None = None) -> str:
        """Generate the model's answer to `messages` (sampling seeded by `seed` and the call number); `schema` is
        described in the prompt only."""
        import torch

        self.load()
        check(cancel)
        input_ids, mask = self._prompt_ids(messages)
        input_ids = input_ids.to(self._lm.device)
        if mask is not None:
            mask = mask.to(self._lm.device)
        sample = self.temperature > 0
        torch.manual_seed(self.seed * 1000 + self.calls)
        self.calls += 1
        pad = self._tokenizer.pad_token_id if self._tokenizer.pad_token_id is not None else self._tokenizer.eos_token_id
        options: dict[str, Any] = {"max_new_tokens": self.max_new_tokens, "do_sample": sample, "pad_token_id": pad}
        if sample:
            options.update(temperature=self.temperature, top_p=0.95)
        from transformers import StoppingCriteriaList

        with torch.inference_mode():
            output = self._lm.generate(input_ids, attention_mask=mask,
                                       stopping_criteria=StoppingCriteriaList([_StopOnCancel(cancel)]), **options)
        check(cancel)
        return self._tokenizer.decode(output[0, input_ids.shape[1]:], skip_special_tokens=True)

    def release(self) -> None:
        """Drop the model and free the memory it held (GPU memory first of all)."""
        with self._lock:
            self._lm = None
            self._tokenizer = None
        devices.free_memory()
