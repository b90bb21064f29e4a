"""A scripted LLM server on loopback: the test seam for the real model adapters.

It speaks the OpenAI chat completions API (``POST /v1/chat/completions``) and the
Anthropic messages API (``POST /v1/messages``) over real HTTP, so the official SDK clients
talk to it exactly as they talk to a provider. Each request takes the next scripted
:class:`Turn` (a plain answer, a tool call, structured output, invalid JSON, a 429 with
Retry-After, a 500, a hung request, a refusal) and is recorded, so tests assert what was
sent: messages, schema, tools, headers.

Turns are built with the helpers below (``openai_text``, ``anthropic_tool_use``…). A
request with nothing scripted is answered by ``responder(request)`` if set (a model
stand-in computing its answer from what was sent), else with a 500 whose message says
so, so a test that sends more than it scripted fails loudly.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

__all__ = [
    "LLMStub",
    "Recorded",
    "Turn",
    "anthropic_error",
    "anthropic_refusal",
    "anthropic_text",
    "anthropic_tool_use",
    "llm_stub",
    "openai_error",
    "openai_refusal",
    "openai_text",
    "openai_tool_call",
]


@dataclass
class Turn:
    """One scripted answer. ``hang``: never answer (until the stub closes)."""

    body: Any = None
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    hang: bool = False
    drop: bool = False
    """Close the connection without answering (a dropped connection)."""
    raw: bytes | None = None
    """Bytes sent as the body instead of ``body``'s JSON (e.g. a truncated answer)."""


@dataclass
class Recorded:
    """A request as the stub received it."""

    method: str
    path: str
    headers: dict[str, str]
    json: Any
    at: float
    """When it arrived (``time.monotonic()``)."""


def openai_text(
    text: str | None,
    *,
    tokens: tuple[int, int] = (11, 7),
    finish: str = "stop",
    model: str = "",
    cached: int = 0,
) -> Turn:
    """A chat completion whose message is ``text`` (JSON text for structured output).
    ``cached``: of the prompt tokens, those the server read from its prompt cache."""
    turn = _openai_choice({"role": "assistant", "content": text}, tokens, finish, model)
    if cached:
        turn.body["usage"]["prompt_tokens_details"] = {"cached_tokens": cached}
    return turn


def openai_tool_call(
    name: str,
    arguments: dict[str, Any] | str,
    *,
    call_id: str = "call_1",
    tokens: tuple[int, int] = (11, 7),
) -> Turn:
    args = arguments if isinstance(arguments, str) else json.dumps(arguments)
    message = {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {"id": call_id, "type": "function", "function": {"name": name, "arguments": args}}
        ],
    }
    return _openai_choice(message, tokens, "tool_calls", "")


def openai_refusal(reason: str, *, tokens: tuple[int, int] = (11, 7)) -> Turn:
    message = {"role": "assistant", "content": None, "refusal": reason}
    return _openai_choice(message, tokens, "stop", "")


def openai_error(
    status: int, message: str, *, retry_after: str | None = None, kind: str = "invalid_request"
) -> Turn:
    headers = {"retry-after": retry_after} if retry_after is not None else {}
    body = {"error": {"message": message, "type": kind, "param": None, "code": None}}
    return Turn(body=body, status=status, headers=headers)


def _openai_choice(
    message: dict[str, Any], tokens: tuple[int, int], finish: str, model: str
) -> Turn:
    return Turn(
        body={
            "id": "chatcmpl-stub",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model or "stub-model",
            "choices": [
                {"index": 0, "message": message, "finish_reason": finish, "logprobs": None}
            ],
            "usage": {
                "prompt_tokens": tokens[0],
                "completion_tokens": tokens[1],
                "total_tokens": sum(tokens),
            },
        }
    )


def anthropic_text(
    text: str,
    *,
    tokens: tuple[int, int] = (13, 5),
    stop: str = "end_turn",
    model: str = "",
    cache: tuple[int, int] = (0, 0),
) -> Turn:
    """A text answer. ``cache``: prompt tokens read from and written to the prompt cache
    (Anthropic counts them apart from ``input_tokens``)."""
    turn = _anthropic([{"type": "text", "text": text}], tokens, stop, model)
    if any(cache):
        usage = turn.body["usage"]
        usage["cache_read_input_tokens"], usage["cache_creation_input_tokens"] = cache
    return turn


def anthropic_tool_use(
    name: str,
    arguments: dict[str, Any],
    *,
    call_id: str = "toolu_1",
    tokens: tuple[int, int] = (13, 5),
    stop: str = "tool_use",
) -> Turn:
    block = {"type": "tool_use", "id": call_id, "name": name, "input": arguments}
    return _anthropic([block], tokens, stop, "")


def anthropic_refusal(text: str = "", *, tokens: tuple[int, int] = (13, 5)) -> Turn:
    content = [{"type": "text", "text": text}] if text else []
    return _anthropic(content, tokens, "refusal", "")


def anthropic_error(
    status: int,
    message: str,
    *,
    retry_after: str | None = None,
    kind: str = "invalid_request_error",
) -> Turn:
    headers = {"retry-after": retry_after} if retry_after is not None else {}
    body = {"type": "error", "error": {"type": kind, "message": message}}
    return Turn(body=body, status=status, headers=headers)


def _anthropic(
    content: list[dict[str, Any]], tokens: tuple[int, int], stop: str, model: str
) -> Turn:
    return Turn(
        body={
            "id": "msg_stub",
            "type": "message",
            "role": "assistant",
            "model": model or "stub-model",
            "content": content,
            "stop_reason": stop,
            "stop_sequence": None,
            "usage": {"input_tokens": tokens[0], "output_tokens": tokens[1]},
        }
    )


class LLMStub:
    """The server. Use as a context manager (the ``llm_stub`` fixture does)."""

    def __init__(self) -> None:
        self.turns: deque[Turn] = deque()
        self.requests: list[Recorded] = []
        self.release = threading.Event()
        """Set on close: hung requests give up (with a dropped connection)."""
        self.lock = threading.Lock()
        self.responder: Callable[[Recorded], Turn] | None = None
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )

    @property
    def openai_url(self) -> str:
        return self.url + "/v1"

    def script(self, *turns: Turn) -> None:
        with self.lock:
            self.turns.extend(turns)

    def bodies(self) -> list[Any]:
        """The JSON body of every request, in order."""
        return [r.json for r in self.requests]

    def __enter__(self) -> LLMStub:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)

    def _next(self, recorded: Recorded) -> Turn:
        with self.lock:
            self.requests.append(recorded)
            if self.turns:
                return self.turns.popleft()
        if self.responder is not None:
            return self.responder(recorded)
        return openai_error(500, f"llm stub: nothing scripted for request {len(self.requests)}")

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        stub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body: no 40 ms delayed-ACK stall
            timeout = 10  # an idle keep-alive connection's thread ends by itself

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                raw = self.rfile.read(length) if length else b""
                try:
                    body = json.loads(raw) if raw else None
                except ValueError:
                    body = raw.decode(errors="replace")
                headers = {k.lower(): v for k, v in self.headers.items()}
                recorded = Recorded("POST", self.path, headers, body, time.monotonic())
                turn = stub._next(recorded)
                if turn.hang:
                    stub.release.wait(30)
                if turn.hang or turn.drop:
                    self.close_connection = True
                    return
                data = turn.raw if turn.raw is not None else json.dumps(turn.body).encode()
                self.send_response(turn.status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                for name, value in turn.headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # quiet: the recorded requests are what tests look at

        return Handler


@pytest.fixture
def llm_stub() -> Iterator[LLMStub]:
    """A started stub, closed after the test (import it into a conftest to use it)."""
    with LLMStub() as stub:
        yield stub
