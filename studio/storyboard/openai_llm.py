"""The ``openai`` storyboard writer: any OpenAI-compatible chat endpoint (OpenAI, Ollama's ``/v1``, vLLM, LM Studio,
llama.cpp's server) over HTTP.

Configuration comes from the options or the environment:

- ``base_url`` or ``OPENAI_BASE_URL`` (e.g. ``http://localhost:11434/v1`` for Ollama; default OpenAI's own),
- ``model`` or ``STUDIO_LLM_MODEL`` (e.g. ``llama3.2``, ``gpt-4o-mini``),
- ``api_key`` or ``OPENAI_API_KEY`` (local servers usually need none).

`auto` picks this writer only when Studio was pointed at a server (``STUDIO_LLM_MODEL`` or ``OPENAI_BASE_URL`` set, or
the options given), never merely because an API key is lying around. Requests time out, 429 and 5xx answers are
retried with exponential backoff (``Retry-After`` is honoured), and the usual failures get messages that say what to
do: a refused key (401/403), a model the server does not know (it lists the ones it has), nothing listening, no answer
in time. The API key never appears in a message.

Each request carries the JSON schema of the answer (``response_format: {"type": "json_schema", ...}`` with
``strict: true``; OpenAI, vLLM, LM Studio, llama.cpp's server and Ollama 0.5+ constrain the model to it). A server that
answers 400 because it does not take that is asked once more with ``{"type": "json_object"}`` (JSON mode) and then
with no ``response_format``; what worked is remembered for that base URL for the rest of the process.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import socket
import threading
import time
from typing import Any
from urllib.parse import urlsplit

from ..errors import ProviderUnavailable, StudioError
from ..progress import CancelToken, check
from ..providers import register
from ._llm import ChatWriter, Messages, portable_schema

log = logging.getLogger("studio")

OPENAI_URL = "https://api.openai.com/v1"
RETRY_STATUS = (429, 500, 502, 503, 504)
MAX_RETRY_AFTER_S = 60.0
# What a request asks of the answer, most to least: a JSON schema, any JSON object (JSON mode), nothing.
FORMATS = ("json_schema", "json_object", "none")
# Words in a 400/422 answer that say the server refused the `response_format` (not something else in the request).
FORMAT_REFUSAL_WORDS = ("response_format", "json_schema", "json_object", "schema", "format", "grammar")
_formats: dict[str, int] = {}  # base URL -> index into FORMATS that its server took (learned in this process)
_formats_lock = threading.Lock()


class _FormatRefused(Exception):
    """The server answered 400/422 about the `response_format` it was sent."""


def known_format(base_url: str) -> str:
    """The most a server at `base_url` was found to take (`FORMATS`); ``json_schema`` until it refused that."""
    with _formats_lock:
        return FORMATS[_formats.get(base_url.rstrip("/"), 0)]


def _settings(base_url: str | None, model: str | None, api_key: str | None) -> tuple[str, str | None, str | None, bool]:
    """(base URL, model, API key, whether Studio was explicitly pointed at a server) from options, then environment."""
    explicit = bool(base_url or model or os.environ.get("OPENAI_BASE_URL") or os.environ.get("STUDIO_LLM_MODEL"))
    url = (base_url or os.environ.get("OPENAI_BASE_URL") or os.environ.get("OPENAI_API_BASE") or OPENAI_URL).strip()
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise StudioError(f"`base_url` must be an http(s) URL such as http://localhost:11434/v1, got {url!r}")
    name = (model or os.environ.get("STUDIO_LLM_MODEL") or "").strip() or None
    key = api_key if api_key is not None else os.environ.get("OPENAI_API_KEY")
    return url.rstrip("/"), name, (key or None), explicit


def _is_local(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return address.is_loopback or address.is_private or address.is_unspecified


def _check(base_url: str | None = None, model: str | None = None, api_key: str | None = None) -> str:
    """Cheap: Studio is configured for a server, a model is named, and (for a server on this machine or network)
    something listens on its port. No request is sent."""
    import importlib.util

    if importlib.util.find_spec("httpx") is None:
        raise ProviderUnavailable("httpx is not installed: pip install httpx")
    url, name, key, explicit = _settings(base_url, model, api_key)
    if not explicit:
        raise ProviderUnavailable("no server configured: set OPENAI_BASE_URL (e.g. http://localhost:11434/v1 for "
                                  "Ollama) and STUDIO_LLM_MODEL (e.g. llama3.2), plus OPENAI_API_KEY if it needs one")
    if name is None:
        raise ProviderUnavailable(f"no model named for {url}: set STUDIO_LLM_MODEL (e.g. gpt-4o-mini, llama3.2) or "
                                  "pass model=")
    parts = urlsplit(url)
    if _is_local(parts.hostname or ""):
        port = parts.port or (443 if parts.scheme == "https" else 80)
        try:
            with socket.create_connection((parts.hostname, port), timeout=0.5):
                pass
        except OSError as exc:
            raise ProviderUnavailable(f"nothing answers at {url} ({exc.strerror or exc}): start the server "
                                      "(Ollama: `ollama serve`; LM Studio: start its local server)") from None
    return f"{name} at {url}" + ("" if key or _is_local(parts.hostname or "") else " (no OPENAI_API_KEY set)")


@register("storyboard", "openai", check=_check,
          description="Any OpenAI-compatible chat server (OpenAI, Ollama, vLLM, LM Studio, llama.cpp)")
def openai_writer(base_url: str | None = None, model: str | None = None, api_key: str | None = None,
                  timeout_s: float = 120.0, max_retries: int = 3, backoff_s: float = 1.0, temperature: float = 0.7,
                  max_tokens: int = 2000, max_attempts: int = 3, json_mode: bool = True,
                  seed: int | None = 0) -> "OpenAIWriter":
    """A storyboard writer that calls an OpenAI-compatible ``/chat/completions`` endpoint.

    Args:
        base_url: The API's base URL, ending before ``/chat/completions`` (default ``OPENAI_BASE_URL`` or OpenAI's).
        model: The model name on that server (default ``STUDIO_LLM_MODEL``).
        api_key: Bearer token (default ``OPENAI_API_KEY``; local servers usually need none).
        timeout_s: Seconds to wait for an answer.
        max_retries: Retries after a 429 or 5xx answer or a dropped connection.
        backoff_s: First wait before a retry; doubled each time (a ``Retry-After`` header wins).
        temperature: Sampling temperature.
        max_tokens: Longest answer, in tokens.
        max_attempts: How many answers to ask for before giving up on an unusable one.
        json_mode: Send the answer's JSON schema as ``response_format`` (falling back to ``json_object``, then to
            nothing, for servers that refuse it); False sends no ``response_format``.
        seed: Sent to servers that support reproducible sampling; None sends none.
    """
    url, name, key, _ = _settings(base_url, model, api_key)
    if name is None:
        raise StudioError("`model` is needed: set STUDIO_LLM_MODEL (e.g. gpt-4o-mini, llama3.2) or pass model=")
    if not (isinstance(timeout_s, (int, float)) and 0 < timeout_s <= 3600):
        raise StudioError(f"`timeout_s` must be a number of seconds from 0 to 3600, got {timeout_s!r}")
    if not (isinstance(max_retries, int) and 0 <= max_retries <= 10):
        raise StudioError(f"`max_retries` must be a whole number from 0 to 10, got {max_retries!r}")
    if not (isinstance(max_attempts, int) and 1 <= max_attempts <= 10):
        raise StudioError(f"`max_attempts` must be a whole number from 1 to 10, got {max_attempts!r}")
    return OpenAIWriter(url, name, key, timeout_s=float(timeout_s), max_retries=max_retries, backoff_s=float(backoff_s),
                        temperature=float(temperature), max_tokens=int(max_tokens), max_attempts=max_attempts,
                        json_mode=bool(json_mode), seed=seed)


class OpenAIWriter(ChatWriter):
    """Writes storyboards through an OpenAI-compatible chat server."""

    name = "openai"

    def __init__(self, base_url: str, model: str, api_key: str | None, *, timeout_s: float, max_retries: int,
                 backoff_s: float, temperature: float, max_tokens: int, max_attempts: int, json_mode: bool,
                 seed: int | None) -> None:
        self.base_url = base_url
        self.model = model
        self._api_key = api_key
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.max_attempts = max_attempts
        self.json_mode = json_mode
        self.seed = seed
        self.requests = 0  # HTTP requests sent (retries included)

    def __repr__(self) -> str:  # never show the key
        return f"OpenAIWriter(base_url={self.base_url!r}, model={self.model!r})"

    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json"}
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        return headers

    def chat(self, messages: Messages, *, schema: dict[str, Any] | None = None,
             cancel: CancelToken | None = None) -> str:
        """POST the conversation to ``/chat/completions`` and return the first choice's text.

        The answer is asked to fit `schema` (see the module); without one, to be a JSON object (JSON mode).
        """
        body: dict[str, Any] = {"model": self.model, "messages": messages, "temperature": self.temperature,
                                "max_tokens": self.max_tokens}
        if self.seed is not None:
            body["seed"] = self.seed
        level = max(FORMATS.index("json_schema" if schema is not None else "json_object"),
                    FORMATS.index(known_format(self.base_url))) if self.json_mode else FORMATS.index("none")
        first = level
        while True:
            request = dict(body)
            if FORMATS[level] == "json_schema":
                request["response_format"] = {"type": "json_schema", "json_schema": {
                    "name": schema.get("title", "answer"), "schema": portable_schema(schema), "strict": True}}
            elif FORMATS[level] == "json_object":
                request["response_format"] = {"type": "json_object"}
            try:
                data = self._post("/chat/completions", request, cancel)
                break
            except _FormatRefused as exc:  # never raised for a request without a response_format
                level += 1
                log.info("openai writer: %s refused response_format %s (%s); asking with %s", self.base_url,
                         FORMATS[level - 1], exc, FORMATS[level])
        if level > first:
            with _formats_lock:
                _formats[self.base_url] = max(level, _formats.get(self.base_url, 0))
        message: Any = {}
        try:
            message = data["choices"][0]["message"]
            content = message["content"]
        except (KeyError, IndexError, TypeError):
            raise StudioError(f"{self.base_url} answered without a message (no choices[0].message.content): "
                              f"{str(data)[:300]}") from None
        if not isinstance(content, str) and isinstance(message.get("refusal"), str):
            return message["refusal"]  # strict mode's refusal: shown in the error if it is all there is
        return content if isinstance(content, str) else ""

    def _post(self, path: str, body: dict, cancel: CancelToken | None) -> dict:
        import httpx

        url = self.base_url + path
        attempt = 0
        while True:
            check(cancel)
            self.requests += 1
            try:
                with httpx.Client(timeout=httpx.Timeout(self.timeout_s, connect=min(10.0, self.timeout_s))) as client:
                    response = client.post(url, json=body, headers=self._headers())
            except httpx.ConnectError as exc:
                if attempt < self.max_retries and "refused" not in str(exc).lower():
                    attempt += 1
                    self._wait(attempt, None, cancel)
                    continue
                raise StudioError(f"cannot connect to {self.base_url} ({_reason(exc)}): is the server running? "
                                  "(Ollama: `ollama serve`; LM Studio: start its local server; or fix OPENAI_BASE_URL)"
                                  ) from None
            except httpx.TimeoutException:
                raise StudioError(f"{self.base_url} gave no answer within {self.timeout_s:g} s (model {self.model}); "
                                  "a large model on a busy server may need a longer `timeout_s`") from None
            except httpx.HTTPError as exc:
                if attempt < self.max_retries:
                    attempt += 1
                    self._wait(attempt, None, cancel)
                    continue
                raise StudioError(f"request to {self.base_url} failed: {_reason(exc)}") from None
            status = response.status_code
            if status == 200:
                try:
                    return response.json()
                except ValueError:
                    raise StudioError(f"{url} answered 200 but not with JSON: {response.text[:300]!r}") from None
            message = _error_message(response)
            if status in RETRY_STATUS and attempt < self.max_retries:
                attempt += 1
                log.info("openai writer: HTTP %s from %s, retry %d of %d", status, url, attempt, self.max_retries)
                self._wait(attempt, response.headers.get("retry-after"), cancel)
                continue
            if status in (400, 422) and "response_format" in body and \
                    any(word in message.lower() for word in FORMAT_REFUSAL_WORDS):
                raise _FormatRefused(f"HTTP {status}: {message}")  # `chat` asks again with less
            if status in (401, 403):
                hint = "set OPENAI_API_KEY (or pass api_key=)" if not self._api_key else \
                    "check OPENAI_API_KEY (or api_key=): the server refused it"
                raise StudioError(f"{self.base_url} refused the request (HTTP {status}: {message}): {hint}")
            if status == 404 or (status in (400, 422) and "model" in message.lower()
                                 and any(w in message.lower() for w in ("not found", "does not exist", "unknown"))):
                if status == 404 and "model" not in message.lower() and path.endswith("/chat/completions"):
                    raise StudioError(f"{url} does not exist (HTTP 404: {message}): `base_url` should end in /v1 "
                                      "(e.g. http://localhost:11434/v1)")
                offered = self._models()
                raise StudioError(f"{self.base_url} does not know model {self.model!r} (HTTP {status}: {message})"
                                  + (f"; it offers: {', '.join(offered[:20])}" if offered else "")
                                  + ". Set STUDIO_LLM_MODEL or `model` to one of its models"
                                  + (" (Ollama: `ollama pull NAME`)" if ":11434" in self.base_url else ""))
            if status in RETRY_STATUS:
                raise StudioError(f"{self.base_url} kept failing (HTTP {status}: {message}) after {self.max_retries} "
                                  "retries; try again later")
            raise StudioError(f"{self.base_url} answered HTTP {status}: {message}")

    def _wait(self, attempt: int, retry_after: str | None, cancel: CancelToken | None) -> None:
        delay = self.backoff_s * 2 ** (attempt - 1)
        if retry_after:
            try:
                delay = min(max(float(retry_after), 0.0), MAX_RETRY_AFTER_S)
            except ValueError:
                pass
        if cancel is not None:
            if cancel.wait(delay):
                cancel.check()
        else:
            time.sleep(delay)

    def _models(self) -> list[str]:
        """The model ids the server lists at ``/models`` (empty if it does not say)."""
        import httpx

        try:
            with httpx.Client(timeout=min(10.0, self.timeout_s)) as client:
                response = client.get(self.base_url + "/models", headers=self._headers())
            data = response.json().get("data", []) if response.status_code == 200 else []
            return [str(item["id"]) for item in data if isinstance(item, dict) and "id" in item]
        except (httpx.HTTPError, ValueError, AttributeError):
            return []


def _error_message(response: Any) -> str:
    """The server's own error text (OpenAI's ``{"error": {"message": ...}}`` shape, or the body)."""
    try:
        data = response.json()
    except ValueError:
        return response.text.strip()[:300] or response.reason_phrase
    error = data.get("error") if isinstance(data, dict) else None
    if isinstance(error, dict):
        return str(error.get("message") or error)[:300]
    if isinstance(error, str):
        return error[:300]
    return (str(data.get("message") or data.get("detail") or data) if isinstance(data, dict) else str(data))[:300]


def _reason(exc: Exception) -> str:
    text = str(exc)
    return "connection refused" if "refused" in text.lower() else (text or type(exc).__name__)
