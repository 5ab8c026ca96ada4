"""A real OpenAI-compatible HTTP server on 127.0.0.1 for tests: scripted replies, recorded requests.

    with OpenAIServer(answers=['{"title": "T", "scenes": [...]}']) as server:
        writer, _ = providers.create("storyboard", "openai", base_url=server.url, model="tiny-chat")

`POST /v1/chat/completions` answers with the next scripted `Reply` (a status, a body, a delay, headers), or with the
next scripted answer text in a normal completion; `GET /v1/models` lists `models`. Every request is recorded (path,
headers, JSON body).
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Reply:
    status: int = 200
    body: Any = None  # a dict (sent as JSON) or text; None: a completion with the next answer
    delay_s: float = 0.0
    headers: dict = field(default_factory=dict)


def completion(text: str, model: str = "tiny-chat") -> dict:
    return {"id": "chatcmpl-1", "object": "chat.completion", "created": int(time.time()), "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}


class OpenAIServer:
    def __init__(self, answers: list[str] | None = None, replies: list[Reply] | None = None,
                 models: tuple[str, ...] = ("tiny-chat",)) -> None:
        self.answers = list(answers or [])
        self.replies = list(replies or [])
        self.models = models
        self.requests: list[dict] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # keep test output clean
                pass

            def _send(self, status: int, body: Any, headers: dict | None = None) -> None:
                data = json.dumps(body).encode() if not isinstance(body, str) else body.encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json" if not isinstance(body, str) else "text/plain")
                self.send_header("Content-Length", str(len(data)))
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.end_headers()
                try:
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):  # the client gave up (a timeout test)
                    pass

            def do_GET(self) -> None:
                server.requests.append({"method": "GET", "path": self.path, "headers": dict(self.headers)})
                if self.path.rstrip("/") == "/v1/models":
                    self._send(200, {"object": "list", "data": [{"id": m, "object": "model"} for m in server.models]})
                else:
                    self._send(404, {"error": {"message": f"no route {self.path}"}})

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                try:
                    body = json.loads(raw or b"{}")
                except ValueError:
                    body = None
                server.requests.append({"method": "POST", "path": self.path, "headers": dict(self.headers),
                                        "json": body})
                if self.path != "/v1/chat/completions":
                    self._send(404, {"error": {"message": f"no route {self.path}"}})
                    return
                reply = server.replies.pop(0) if server.replies else Reply()
                if reply.delay_s:
                    time.sleep(reply.delay_s)
                if reply.body is None:
                    text = server.answers.pop(0) if server.answers else ""
                    self._send(reply.status, completion(text, (body or {}).get("model", "")), reply.headers)
                else:
                    self._send(reply.status, reply.body, reply.headers)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    @property
    def chats(self) -> list[dict]:
        """The JSON bodies of the chat requests received."""
        return [r["json"] for r in self.requests if r["method"] == "POST"]

    def __enter__(self) -> "OpenAIServer":
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
