"""A local chat-completions endpoint that answers from a script, for the LLM planner."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


def tool_call_answer(call_id: str, name: str, arguments: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": f"chatcmpl-{call_id}",
        "object": "chat.completion",
        "choices": [
            {
                "index": 0,
                "finish_reason": "tool_calls",
                "message": {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": call_id,
                            "type": "function",
                            "function": {"name": name, "arguments": json.dumps(arguments)},
                        }
                    ],
                },
            }
        ],
    }


@dataclass
class ScriptedLlm:
    base_url: str
    answers: list[dict[str, Any]] = field(default_factory=list)
    requests: list[dict[str, Any]] = field(default_factory=list)
    authorizations: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def script(self, answers: list[dict[str, Any]]) -> None:
        with self.lock:
            self.answers = list(answers)
            self.requests.clear()
            self.authorizations.clear()


class _Handler(BaseHTTPRequestHandler):
    llm: ScriptedLlm

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))))
        with self.llm.lock:
            self.llm.requests.append(body)
            self.llm.authorizations.append(self.headers.get("Authorization", ""))
            answer = self.llm.answers.pop(0) if self.llm.answers else None
        if self.path != "/v1/chat/completions" or answer is None:
            data = b'{"error": {"message": "no scripted answer left"}}'
            self.send_response(500)
        else:
            data = json.dumps(answer).encode()
            self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@contextmanager
def scripted_llm() -> Iterator[ScriptedLlm]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    llm = ScriptedLlm(base_url=f"http://127.0.0.1:{server.server_address[1]}/v1")
    server.RequestHandlerClass = type("Handler", (_Handler,), {"llm": llm})
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield llm
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
