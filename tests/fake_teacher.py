"""A scripted OpenAI-compatible teacher endpoint: a real HTTP server on 127.0.0.1, so tests drive the real client.

`reply(messages) -> str` writes each answer; raising in it gives a 500 for that request. `fail_first` makes the
first N requests fail with `fail_status` (500 or 429). Every chat request's JSON body lands in `requests`, failed
ones included. Usage is counted in words (prompt: all message contents; completion: the reply), so budgets are exact.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

Reply = Callable[[list[dict[str, str]]], str]


def words(text: str) -> int:
    return len(text.split())


class FakeEndpoint:
    def __init__(self, reply: Reply, fail_first: int = 0, fail_status: int = 500, model: str = "fake-teacher"):
        self.reply = reply
        self.fail_first = fail_first
        self.fail_status = fail_status
        self.model = model
        self.requests: list[dict] = []
        self.failed = 0
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def contents(self) -> list[str]:
        """The last message of every request received, in arrival order."""
        return [r["messages"][-1]["content"] for r in self.requests]

    def answer(self, body: dict) -> tuple[int, dict]:
        with self.lock:
            self.requests.append(body)
            failing = self.fail_first > 0
            self.fail_first -= failing
        if failing:
            return self._fail(self.fail_status, "scripted failure")
        try:
            text = self.reply(body["messages"])
        except Exception as e:  # a reply function that raises scripts a server error for this request
            return self._fail(500, str(e))
        prompt = sum(words(m["content"]) for m in body["messages"])
        return 200, {
            "id": f"chatcmpl-{len(self.requests)}",
            "object": "chat.completion",
            "created": 0,
            "model": body.get("model", self.model),
            "choices": [
                {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"},
            ],
            "usage": {"prompt_tokens": prompt, "completion_tokens": words(text), "total_tokens": prompt + words(text)},
        }

    def _fail(self, status: int, message: str) -> tuple[int, dict]:
        with self.lock:
            self.failed += 1
        return status, {"error": {"message": message, "type": "server_error", "code": status}}


def _handler(endpoint: FakeEndpoint) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as the client expects

        def do_GET(self):
            if self.path.rstrip("/") == "/v1/models":
                self._send(200, {"object": "list", "data": [{"id": endpoint.model, "object": "model"}]})
            else:
                self._send(404, {"error": {"message": "not found"}})

        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
            if self.path.rstrip("/") != "/v1/chat/completions":
                self._send(404, {"error": {"message": "not found"}})
                return
            self._send(*endpoint.answer(body))

        def _send(self, status: int, payload: dict) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            if status != 200:
                self.send_header("retry-after-ms", "1")  # the client's own backoff starts at 0.5 s; keep tests fast
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format, *args):  # quiet
            pass

    return Handler


@contextmanager
def fake_endpoint(reply: Reply, *, fail_first: int = 0, fail_status: int = 500) -> Iterator[FakeEndpoint]:
    endpoint = FakeEndpoint(reply, fail_first, fail_status)
    thread = threading.Thread(target=endpoint.server.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    try:
        yield endpoint
    finally:
        endpoint.server.shutdown()
        endpoint.server.server_close()
        thread.join()
