"""Fake model servers speaking the real wire protocols (OpenAI chat completions, Anthropic Messages),
answering from a script and counting the tokens they bill, so that a test can hold the gateway's
metering against the server's own count. Served by uvicorn on a loopback port, in a thread."""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Self

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route


@dataclass
class Reply:
    """One scripted answer: text and/or tool calls (name, arguments object)."""

    content: str = ""
    tool_calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)


def bash(command: str, thought: str = "") -> Reply:
    """A mini-swe-agent-style turn: one call of its ``bash`` tool."""
    return Reply(thought, [("bash", {"command": command})])


def tokens_of(obj: Any) -> int:
    """The fake's tokenizer: one token per 4 characters of the JSON text, at least 1."""
    return max(1, len(json.dumps(obj, sort_keys=True)) // 4)


class FakeServer:
    """Common part: the script, the count, fault injection, the uvicorn thread."""

    def __init__(self, replies: list[Reply] | None = None, *, cached: int = 0) -> None:
        self.replies = list(replies or [])
        self.requests: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.input_tokens = 0
        self.output_tokens = 0
        self.cached = cached  # cached input tokens reported per call
        self.faults: list[int] = []  # HTTP statuses to answer with before the next real answer
        self.default: Reply | None = None  # what to answer once the script is done (None: an error)
        self._server: uvicorn.Server | None = None
        self.port = 0

    def next_reply(self) -> Reply | None:
        if self.replies:
            return self.replies.pop(0)
        return self.default

    def count(self, body: dict[str, Any], reply: Reply) -> tuple[int, int]:
        inp = tokens_of(body.get("messages")) + tokens_of(body.get("system") or "") + tokens_of(body.get("tools") or [])
        out = tokens_of({"c": reply.content, "t": reply.tool_calls})
        self.input_tokens += inp
        self.output_tokens += out
        return inp, out

    def app(self) -> Starlette:
        raise NotImplementedError

    def start(self) -> Self:
        server = uvicorn.Server(uvicorn.Config(self.app(), host="127.0.0.1", port=0, log_level="warning",
                                               lifespan="off"))
        threading.Thread(target=lambda: asyncio.run(server.serve()), daemon=True).start()
        deadline = time.monotonic() + 20
        while not server.started:
            assert time.monotonic() < deadline, "the fake server did not start"
            time.sleep(0.02)
        self._server = server
        self.port = server.servers[0].sockets[0].getsockname()[1]
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True

    async def _take(self, request: Request) -> tuple[dict[str, Any], Reply | Response]:
        body = await request.json()
        self.requests.append(body)
        self.headers.append(dict(request.headers))
        if self.faults:
            status = self.faults.pop(0)
            return body, JSONResponse({"error": {"message": f"injected fault {status}", "type": "server_error"}},
                                      status_code=status)
        reply = self.next_reply()
        if reply is None:
            return body, JSONResponse({"error": {"message": "the fake's script is done", "type": "invalid_request"}},
                                      status_code=400)
        return body, reply


class FakeOpenAI(FakeServer):
    """``POST /v1/chat/completions`` (non-streaming: the gateway's upstream calls never stream)."""

    def app(self) -> Starlette:
        return Starlette(routes=[Route("/v1/chat/completions", self._complete, methods=["POST"])])

    async def _complete(self, request: Request) -> Response:
        body, reply = await self._take(request)
        if isinstance(reply, Response):
            return reply
        inp, out = self.count(body, reply)
        calls = [{"id": f"call_{uuid.uuid4().hex[:8]}", "type": "function",
                  "function": {"name": name, "arguments": json.dumps(args)}} for name, args in reply.tool_calls]
        message: dict[str, Any] = {"role": "assistant", "content": reply.content or None}
        if calls:
            message["tool_calls"] = calls
        return JSONResponse({
            "id": f"chatcmpl-{uuid.uuid4().hex[:8]}", "object": "chat.completion", "created": int(time.time()),
            "model": body.get("model", "fake"),
            "choices": [{"index": 0, "message": message, "finish_reason": "tool_calls" if calls else "stop"}],
            "usage": {"prompt_tokens": inp, "completion_tokens": out, "total_tokens": inp + out,
                      "prompt_tokens_details": {"cached_tokens": min(self.cached, inp)}},
        })


class FakeAnthropic(FakeServer):
    """``POST /v1/messages`` (non-streaming)."""

    def app(self) -> Starlette:
        return Starlette(routes=[Route("/v1/messages", self._message, methods=["POST"])])

    async def _message(self, request: Request) -> Response:
        body, reply = await self._take(request)
        if isinstance(reply, Response):
            return reply
        inp, out = self.count(body, reply)
        content: list[dict[str, Any]] = [{"type": "text", "text": reply.content}] if reply.content else []
        content += [{"type": "tool_use", "id": f"toolu_{uuid.uuid4().hex[:8]}", "name": name, "input": args}
                    for name, args in reply.tool_calls]
        cached = min(self.cached, inp)
        return JSONResponse({
            "id": f"msg_{uuid.uuid4().hex[:8]}", "type": "message", "role": "assistant",
            "model": body.get("model", "fake"), "content": content,
            "stop_reason": "tool_use" if reply.tool_calls else "end_turn", "stop_sequence": None,
            # Anthropic's input_tokens leaves cache reads out
            "usage": {"input_tokens": inp - cached, "output_tokens": out, "cache_read_input_tokens": cached,
                      "cache_creation_input_tokens": 0},
        })
