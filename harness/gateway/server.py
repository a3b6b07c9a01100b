"""The model gateway: the only way a scaffold's agent reaches a model.

A :class:`Gateway` runs inside the harness process (uvicorn in a thread, on a Unix socket that the
sandbox gets bind-mounted, or on a loopback TCP port for tests) for the life of a run. It speaks two
protocols, OpenAI chat completions (``POST /v1/chat/completions``) and Anthropic Messages
(``POST /v1/messages``), both with streaming, and serves each call with the run's own
:class:`~harness.models.base.Model`: the call is translated to the neutral conversation, completed by
the configured provider (its key, retries and prices, exactly as for the built-in loop) and
translated back to the protocol the agent spoke. So a Claude-Code-style agent can drive a vLLM server
and an OpenAI-style agent Claude.

Each call is metered and recorded as the built-in loop's are: a ``model_call`` event (usage, cost,
latency, the assistant's turn: transcripts, ``replay`` and the budget read it) and a
``gateway_call`` event naming the protocol, the HTTP status and the file under
``iterations/NNNN/gateway/`` that holds the request as the agent sent it and the answer as it got it.
Before each call the run's budget and the episode's limits are checked; a call past one is refused
(HTTP 403, a message naming the limit), recorded, and the episode is over: the sandbox side
(``staircase-agent-run``) polls ``GET /staircase/episode`` and stops the agent. The agent's
``submit`` command posts to ``/staircase/submit``.

Calls are served one at a time (the ledger has one writer; an agent's parallel calls wait their turn).
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import uvicorn
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from harness.budget import Budget, BudgetExhausted
from harness.events import EndReason, GatewayCall, ModelCall, ToolCallEvent
from harness.gateway import wire_anthropic, wire_openai
from harness.gateway.errors import BadRequest, GatewayRefusal
from harness.ledger import Ledger, write_json_atomic
from harness.models.base import Message, Model, ModelError, ModelExhausted, ModelResponse, ToolCall

Protocol = Literal["openai", "anthropic"]
OUTPUT_HEAD = OUTPUT_TAIL = 6000  # of a tool result, in its tool_call event (the record file has it whole)


@dataclass
class Session:
    """One episode as the gateway sees it: what was spent, and whether (and how) it is over."""

    iteration: int
    attempt: int
    max_actions: int | None = None  # the per-iteration action cap (a tool call, or a turn without one)
    max_tokens: int | None = None  # the per-iteration token cap
    calls: int = 0
    actions: int = 0
    tokens: int = 0
    end: EndReason | None = None
    message: str = ""  # the submission message
    detail: str = ""
    error: ModelError | None = None  # the provider gave up: the run stops (resumably), as in the built-in loop
    started: float = field(default_factory=time.monotonic)
    # Tool calls the model asked for whose results have not come back yet: call id -> (turn, call).
    pending: dict[str, tuple[int, ToolCall]] = field(default_factory=dict)

    def over(self, reason: EndReason, detail: str, message: str = "") -> None:
        if self.end is None:
            self.end, self.detail, self.message = reason, detail, message


class Gateway:
    """The run's gateway. ``start()`` it once; ``begin()``/``finish()`` bracket each episode."""

    def __init__(self, model: Model, ledger: Ledger, budget: Budget, *, socket_path: Path | None = None,
                 host: str = "127.0.0.1", port: int = 0) -> None:
        self.model, self.ledger, self.budget = model, ledger, budget
        self.socket_path = socket_path
        self.host, self.port = host, port
        self.session: Session | None = None
        self._lock = threading.Lock()  # one call at a time: the ledger has one writer
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self.app = Starlette(routes=[
            Route("/v1/chat/completions", self._openai, methods=["POST"]),
            Route("/v1/messages", self._anthropic, methods=["POST"]),
            Route("/v1/messages/count_tokens", self._count_tokens, methods=["POST"]),
            Route("/v1/models", self._models, methods=["GET"]),
            Route("/staircase/episode", self._episode, methods=["GET"]),
            Route("/staircase/submit", self._submit, methods=["POST"]),
        ])

    # -- life --------------------------------------------------------------------------------------

    def start(self, timeout_s: float = 30.0) -> Gateway:
        """Serve in a daemon thread; returns once the socket accepts."""
        if self.socket_path is not None:
            self.socket_path.unlink(missing_ok=True)
            config = uvicorn.Config(self.app, uds=str(self.socket_path), log_level="warning", lifespan="off")
        else:
            config = uvicorn.Config(self.app, host=self.host, port=self.port, log_level="warning", lifespan="off")
        server = uvicorn.Server(config)
        self._server = server
        self._thread = threading.Thread(target=lambda: asyncio.run(server.serve()), name="staircase-gateway",
                                        daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while not server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the model gateway did not start (socket {self.socket_path}, port {self.port})")
            time.sleep(0.02)
        if self.socket_path is not None:
            self.socket_path.chmod(0o666)  # the sandbox's user connects to it
        else:
            self.port = server.servers[0].sockets[0].getsockname()[1]
        return self

    @property
    def url(self) -> str:
        """The base URL on a TCP port (tests); the sandbox reaches the socket through its forwarder."""
        return f"http://{self.host}:{self.port}"

    def close(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
        if self.socket_path is not None:
            self.socket_path.unlink(missing_ok=True)

    def begin(self, iteration: int, attempt: int, *, max_actions: int | None = None,
              max_tokens: int | None = None) -> Session:
        with self._lock:
            self.session = Session(iteration, attempt, max_actions=max_actions, max_tokens=max_tokens)
            return self.session

    def finish(self) -> Session | None:
        """The episode is over: later calls are refused until the next ``begin``. Tool calls whose
        results never came back (the agent's last ones: ``submit``...) are recorded as such. A call
        still in flight (a provider that hangs) is not waited for: it records itself when it ends."""
        session, self.session = self.session, None
        if session is not None and self._lock.acquire(timeout=5):
            try:
                for turn, call in session.pending.values():
                    self._tool_event(session, turn, call, "(no result came back through the gateway: the agent "
                                                          "ended, or did not report it)", None)
                session.pending.clear()
            finally:
                self._lock.release()
        return session

    # -- the two protocols -------------------------------------------------------------------------

    async def _openai(self, request: Request) -> Response:
        return await self._serve(request, "openai")

    async def _anthropic(self, request: Request) -> Response:
        return await self._serve(request, "anthropic")

    async def _serve(self, request: Request, protocol: Protocol) -> Response:
        try:
            body = await request.json()
        except (ValueError, UnicodeDecodeError):
            return self._error(protocol, BadRequest("the body is not JSON"))
        if not isinstance(body, dict):
            return self._error(protocol, BadRequest("the body must be a JSON object"))
        try:
            resp, call_id = await run_in_threadpool(self._call, protocol, body)
        except GatewayRefusal as e:
            return self._error(protocol, e)
        model = str(body.get("model") or resp.model or self.model.name)
        if protocol == "openai":
            if body.get("stream"):
                include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
                return _sse(wire_openai.stream(resp, call_id, model, include_usage))
            return JSONResponse(wire_openai.completion(resp, call_id, model))
        if body.get("stream"):
            return _sse(wire_anthropic.stream(resp, call_id, model))
        return JSONResponse(wire_anthropic.message(resp, call_id, model))

    def _call(self, protocol: Protocol, body: dict[str, Any]) -> tuple[ModelResponse, str]:
        """Check the limits, complete the call upstream, record it. Runs in a worker thread."""
        with self._lock:
            session = self.session
            t0 = time.monotonic()
            try:
                if session is None:
                    raise GatewayRefusal("no episode is running: the gateway serves only during an iteration",
                                         status=409, kind="no_episode")
                if session.end is not None:
                    raise GatewayRefusal(f"this iteration is over ({session.end.value}): {session.detail}",
                                         status=403, kind="episode_over")
                self._check_limits(session)
                parse = wire_openai.parse_request if protocol == "openai" else wire_anthropic.parse_request
                messages, tools = parse(body)
                self._tool_results(session, messages)
                turn = session.calls
                session.calls += 1
                try:
                    resp = self.model.complete(messages, tools)
                except ModelExhausted as e:
                    session.over(EndReason.MODEL_STOPPED, str(e) or "the model has nothing more to say")
                    raise GatewayRefusal(f"the model stopped: {e}", status=403, kind="model_stopped") from None
                except ModelError as e:
                    session.error = e
                    session.over(EndReason.MODEL_STOPPED, str(e))
                    raise GatewayRefusal(str(e), status=502, kind="upstream_error") from None
            except GatewayRefusal as refusal:
                self._record_refusal(session, protocol, body, refusal, time.monotonic() - t0)
                raise
            call_id = f"{'chatcmpl' if protocol == 'openai' else 'msg'}_{uuid.uuid4().hex[:24]}"
            self.ledger.append(ModelCall(iteration=session.iteration, attempt=session.attempt, turn=turn,
                                         message=resp.message, usage=resp.usage, cost_usd=resp.cost_usd,
                                         latency_s=round(resp.latency_s, 3), stop_reason=resp.stop_reason,
                                         model=resp.model, attempts=resp.attempts))
            session.actions += max(1, len(resp.message.tool_calls))
            session.pending.update((c.id, (turn, c)) for c in resp.message.tool_calls)
            session.tokens += resp.usage.total
            record = self._write_record(session, turn, protocol, body, {"id": call_id, **resp.model_dump()})
            self.ledger.append(GatewayCall(iteration=session.iteration, attempt=session.attempt, turn=turn,
                                           protocol=protocol, stream=bool(body.get("stream")),
                                           tool_calls=len(resp.message.tool_calls), record=record,
                                           latency_s=round(time.monotonic() - t0, 3)))
            return resp, call_id

    def _tool_results(self, session: Session, messages: list[Message]) -> None:
        """The results of the model's tool calls, as the agent sends them back with its next call:
        each becomes a ``tool_call`` event (so tool-call budgets, transcripts and replays see them)."""
        for m in messages:
            if m.role == "tool" and m.tool_call_id in session.pending:
                turn, call = session.pending.pop(m.tool_call_id)
                self._tool_event(session, turn, call, m.content, f"iterations/{session.iteration:04d}/gateway/"
                                                                 f"{session.attempt}-{session.calls:04d}.json")

    def _tool_event(self, session: Session, turn: int, call: ToolCall, output: str, full: str | None) -> None:
        cut = len(output) > OUTPUT_HEAD + OUTPUT_TAIL
        shown = (f"{output[:OUTPUT_HEAD]}\n[... {len(output) - OUTPUT_HEAD - OUTPUT_TAIL} characters cut; the full "
                 f"output is in the gateway's record ...]\n{output[-OUTPUT_TAIL:]}") if cut else output
        self.ledger.append(ToolCallEvent(iteration=session.iteration, attempt=session.attempt, turn=turn,
                                         call_id=call.id, name=call.name, arguments=call.arguments,
                                         is_error=output.startswith("[error]"), output=shown,
                                         full_output=full if cut else None))

    def _check_limits(self, session: Session) -> None:
        try:
            self.budget.check()
        except BudgetExhausted as e:
            session.over(EndReason.BUDGET, e.reason)
            raise GatewayRefusal(f"the run's budget is spent ({e.reason}): submit your work", status=403,
                                 kind="budget_exhausted") from None
        if session.max_actions is not None and session.actions >= session.max_actions:
            session.over(EndReason.TOOL_CAP, f"{session.actions} actions of {session.max_actions} in this iteration")
            raise GatewayRefusal(f"the per-iteration cap of {session.max_actions} actions is reached", status=403,
                                 kind="limit_reached")
        if session.max_tokens is not None and session.tokens >= session.max_tokens:
            session.over(EndReason.BUDGET, f"{session.tokens} tokens of {session.max_tokens} in this iteration")
            raise GatewayRefusal(f"the per-iteration cap of {session.max_tokens} tokens is reached", status=403,
                                 kind="limit_reached")

    def _record_refusal(self, session: Session | None, protocol: Protocol, body: dict[str, Any],
                        refusal: GatewayRefusal, latency: float) -> None:
        if session is None:
            return  # between episodes there is no iteration to file it under
        record = self._write_record(session, None, protocol, body, {"error": refusal.message, "kind": refusal.kind})
        self.ledger.append(GatewayCall(iteration=session.iteration, attempt=session.attempt, protocol=protocol,
                                       stream=bool(body.get("stream")), status=refusal.status,
                                       error=f"{refusal.kind}: {refusal.message}", record=record,
                                       latency_s=round(latency, 3)))

    def _write_record(self, session: Session, turn: int | None, protocol: Protocol, request: dict[str, Any],
                      response: dict[str, Any]) -> str:
        """The call as the agent made it and what it was answered, beside the iteration's other files."""
        folder = self.ledger.iteration_dir(session.iteration) / "gateway"
        folder.mkdir(exist_ok=True)
        name = f"{session.attempt}-{turn:04d}.json" if turn is not None else \
            f"{session.attempt}-refused-{uuid.uuid4().hex[:8]}.json"
        write_json_atomic(folder / name, {"protocol": protocol, "request": request, "response": response})
        return str((folder / name).relative_to(self.ledger.run_dir))

    def _error(self, protocol: Protocol, e: GatewayRefusal) -> JSONResponse:
        body = wire_openai.error_body(e.message, e.kind) if protocol == "openai" else \
            wire_anthropic.error_body(e.message, e.kind)
        return JSONResponse(body, status_code=e.status)

    # -- the rest ----------------------------------------------------------------------------------

    async def _count_tokens(self, request: Request) -> Response:
        """An estimate (4 characters a token): agents use it to plan, nothing is billed by it."""
        body = await request.body()
        return JSONResponse({"input_tokens": max(1, len(body) // 4)})

    async def _models(self, request: Request) -> Response:
        return JSONResponse({"object": "list", "data": [{"id": self.model.name, "object": "model",
                                                         "owned_by": "staircase"}]})

    async def _episode(self, request: Request) -> Response:
        s = self.session
        if s is None:
            return JSONResponse({"running": False, "over": True, "reason": "no_episode"})
        return JSONResponse({"running": True, "over": s.end is not None, "reason": s.end.value if s.end else None,
                             "iteration": s.iteration, "calls": s.calls, "actions": s.actions, "tokens": s.tokens})

    async def _submit(self, request: Request) -> Response:
        try:
            body = await request.json()
        except (ValueError, UnicodeDecodeError):
            body = {}
        message = str(body.get("message") or "").strip() if isinstance(body, dict) else ""
        with self._lock:
            s = self.session
            if s is None:
                return JSONResponse({"ok": False, "error": "no episode is running"}, status_code=409)
            if s.end is not None:
                return JSONResponse({"ok": False, "error": f"this iteration is already over ({s.end.value})"},
                                    status_code=409)
            s.over(EndReason.SUBMITTED, "the agent ran submit", message or f"iteration {s.iteration}")
        return JSONResponse({"ok": True})


def _sse(events: Iterator[str]) -> StreamingResponse:
    return StreamingResponse(events, media_type="text/event-stream", headers={"cache-control": "no-cache"})
