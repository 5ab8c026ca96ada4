"""The ``transformers`` storyboard writer: any causal language model, by hub id or local folder, run in-process.

An instruction-tuned chat model is the intended use (e.g. ``Qwen/Qwen2.5-1.5B-Instruct``, a small Llama or Phi): its
own chat template formats the conversation. The weights must be on this machine (the hub cache or a folder saved with
``save_pretrained``); nothing is downloaded while writing. Prompting, JSON checking and retries are in `_llm`.

Generation is constrained to the answer's JSON schema with lm-format-enforcer (an optional dependency, in the
``models`` extra): at each step only the tokens that keep the text on the schema may be drawn, so even a small model
answers with JSON of the right shape. Without the library the model writes unconstrained, and the project notes say so.
"""

from __future__ import annotations

import logging
import math
import threading
import unicodedata
from typing import Any, Callable

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
ENFORCER_NOTE = "storyboard: install lm-format-enforcer for schema-constrained output"


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


def _enforcer_installed() -> bool:
    try:
        import lmformatenforcer  # noqa: F401
    except ImportError:
        return False
    return True


def _enforceable(schema: Any) -> Any:
    """`schema` as lm-format-enforcer can enforce it: it does not bound numbers, so a number with whole bounds (a
    scene's `duration_s`, 1 to 60) becomes the whole numbers in that range."""
    if isinstance(schema, list):
        return [_enforceable(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out = {key: _enforceable(value) for key, value in schema.items()}
    kinds = [out["type"]] if isinstance(out.get("type"), str) else out.get("type")
    low, high = out.get("minimum"), out.get("maximum")
    if isinstance(kinds, list) and {"number", "integer"} & set(kinds) and isinstance(low, (int, float)) \
            and isinstance(high, (int, float)) and 0 <= high - low <= 1000:
        whole = {"type": "integer", "enum": list(range(math.ceil(low), math.floor(high) + 1))}
        others = [{"type": kind} for kind in kinds if kind not in ("number", "integer")]
        return {key: value for key, value in out.items() if key not in ("type", "minimum", "maximum")} | {
            "anyOf": [whole, *others]}
    return out


def _clean(text: str) -> bool:
    """A token text that may be written inside JSON: no control characters (line breaks may go between values) and no
    piece of a character (a byte-level token that decodes to U+FFFD)."""
    return bool(text) and "\ufffd" not in text and not any(
        unicodedata.category(c) == "Cc" and c not in "\n\r" for c in text)


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
        self._token_data: Any = None  # lm-format-enforcer's view of the tokenizer, built on the first constrained chat
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
            # Hybrid thinking models (Qwen3) would think aloud before the JSON: the storyboard needs the answer only.
            # Templates that do not know the switch ignore it.
            encoded = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt",
                                                    return_dict=True, enable_thinking=False)
            return encoded["input_ids"], encoded.get("attention_mask")
        # A base model without a chat template: a plain transcript that ends where the assistant speaks.
        text = "".join(f"{m['role'].title()}: {m['content']}\n\n" for m in messages) + "Assistant:"
        encoded = tokenizer(text, return_tensors="pt")
        return encoded["input_ids"], encoded.get("attention_mask")

    def _tokenizer_data(self) -> Any:
        """The tokenizer's tokens as lm-format-enforcer needs them (once per loaded tokenizer: a large vocabulary takes
        a second or two)."""
        with self._lock:
            if self._token_data is None:
                from lmformatenforcer import TokenEnforcerTokenizerData

                tokenizer = self._tokenizer
                special = set(tokenizer.all_special_ids)
                ids = [token for token in range(len(tokenizer)) if token not in special]
                zero = tokenizer.encode("0", add_special_tokens=False)[-1]
                # Decoded after "0", so a token that starts a word keeps its leading space (as the library's own
                # transformers integration does; that module does not import with transformers 5).
                after_zero = tokenizer.batch_decode([[zero, token] for token in ids])
                alone = tokenizer.batch_decode([[token] for token in ids])
                regular = [(token, text[1:], len(text) - 1 > len(bare))
                           for token, text, bare in zip(ids, after_zero, alone) if _clean(text[1:])]
                eos = {tokenizer.eos_token_id}
                configured = getattr(self._lm.generation_config, "eos_token_id", None)
                eos.update(configured if isinstance(configured, list) else [configured])
                eos.discard(None)
                self._token_data = TokenEnforcerTokenizerData(
                    regular, lambda tokens: tokenizer.decode(tokens).rstrip("\ufffd"), sorted(eos), False,
                    len(tokenizer))
            return self._token_data

    def _constraint(self, schema: dict[str, Any]) -> Callable[[int, Any], list[int]] | None:
        """A ``prefix_allowed_tokens_fn`` that keeps generation on `schema`, or None without lm-format-enforcer."""
        try:
            from lmformatenforcer import CharacterLevelParserConfig, JsonSchemaParser, TokenEnforcer
        except ImportError:
            log.warning("transformers writer: lm-format-enforcer is not installed, so %s writes without the JSON "
                        "schema: pip install lm-format-enforcer", self.model)
            return None
        data = self._tokenizer_data()
        # What a JSON string may hold: the tokenizer's characters but the line breaks (they may only go between values)
        config = CharacterLevelParserConfig(alphabet=data.tokenizer_alphabet.replace("\n", "").replace("\r", ""))
        parser = JsonSchemaParser(_enforceable(schema), config=config)
        enforcer = TokenEnforcer(data, parser)
        parser.config = config  # TokenEnforcer gave it the whole alphabet, line breaks included

        def allowed(batch_id: int, input_ids: Any) -> list[int]:
            return enforcer.get_allowed_tokens(input_ids.tolist()).allowed_tokens

        return allowed

    def output_notes(self) -> tuple[str, ...]:
        return () if _enforcer_installed() else (ENFORCER_NOTE,)

    def chat(self, messages: Messages, *, schema: dict[str, Any] | None = None,
             cancel: CancelToken | None = None) -> str:
        """Generate the model's answer to `messages` (sampling seeded by `seed` and the call number), constrained to
        the JSON `schema` when one is given and lm-format-enforcer is installed."""
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
        constraint = self._constraint(schema) if schema is not None else None
        if constraint is not None:
            options["prefix_allowed_tokens_fn"] = constraint
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
            self._token_data = None
        devices.free_memory()
