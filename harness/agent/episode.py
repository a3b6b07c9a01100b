"""One iteration's conversation: the model calls tools in the sandbox until it submits.

An episode ends in one of a few named ways (:class:`~harness.events.EndReason`): the model submits;
the per-iteration tool cap is reached; the stuck detector fires; a budget runs out; the model has
nothing more to say; the sandbox died more often than allowed (it is made anew after each death,
and the model told what was lost). Every model call and tool call is appended to the ledger before
the next one; a stop signal ends the episode at the next call (:mod:`harness.stop`).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from harness.agent.context import Context
from harness.agent.tools import Tool, ToolResult, run_tool
from harness.budget import Budget, BudgetExhausted
from harness.config import AgentConfig
from harness.events import EndReason, ModelCall, SandboxRestarted, ToolCallEvent
from harness.ledger import Ledger, write_text_durable
from harness.models.base import Message, Model, ModelExhausted
from harness.sandbox.base import Sandbox, SandboxDied
from harness.stop import StopSignals


@dataclass
class EpisodeEnd:
    """How an episode ended, and the submission message it leaves."""

    reason: EndReason
    message: str
    detail: str = ""


class Episode:
    """Iteration ``n``'s conversation (its ``attempt``-th start) until one of the ways it ends."""

    def __init__(self, n: int, attempt: int, model: Model, sandbox: Sandbox, tools: list[Tool], ledger: Ledger,
                 budget: Budget, cfg: AgentConfig, context_window: int, stop: StopSignals) -> None:
        self.n = n
        self.attempt = attempt
        self.model = model
        self.sandbox = sandbox
        self.tools = {t.spec.name: t for t in tools}
        self.ledger = ledger
        self.budget = budget
        self.cfg = cfg
        self.stop = stop
        self.context = Context(context_window, cfg.compact_at_fraction)
        self.outputs = ledger.iteration_dir(n) / "outputs"
        self.tool_calls = 0
        self.sandbox_restarts = 0
        self._recent: list[str] = []

    def run(self, system: str, task: str, prompt: str) -> EpisodeEnd:
        self.context.start([Message(role="system", content=system), Message(role="user", content=task, cache=True),
                            Message(role="user", content=prompt)])
        specs = [t.spec for t in self.tools.values()]
        turn = 0
        while True:
            self.stop.checkpoint()
            try:
                self.budget.check()
            except BudgetExhausted as e:
                return EpisodeEnd(EndReason.BUDGET, f"(budget exhausted: {e.reason})", e.reason)
            if self.budget.iteration_cap_reached(self.tool_calls):
                return EpisodeEnd(EndReason.TOOL_CAP, "(the per-iteration tool-call cap was reached)")
            try:
                with self.stop.interruptible():
                    resp = self.model.complete(self.context.view(), specs)
            except ModelExhausted as e:
                return EpisodeEnd(EndReason.MODEL_STOPPED, "(the model stopped)", str(e))
            self.ledger.append(ModelCall(iteration=self.n, attempt=self.attempt, turn=turn, message=resp.message,
                                         usage=resp.usage, cost_usd=resp.cost_usd, latency_s=round(resp.latency_s, 3),
                                         stop_reason=resp.stop_reason, model=resp.model, attempts=resp.attempts))
            self.context.add(resp.message, resp.usage.input_tokens)
            if not resp.message.tool_calls:
                self.context.add(Message(role="user", content="Use a tool, or call `submit` to end the iteration."))
            for call in resp.message.tool_calls:
                self.stop.checkpoint()
                result = self._run_tool(call.name, call.arguments)
                self.tool_calls += 1
                shown, full_path = self._cut(result.text, call.id)
                if result.exec is not None and result.exec.full_output_path:
                    full_path = result.exec.full_output_path  # the sandbox kept the uncut streams
                self.ledger.append(ToolCallEvent(
                    iteration=self.n, attempt=self.attempt, turn=turn, call_id=call.id, name=call.name,
                    arguments=call.arguments, is_error=result.is_error, output=shown, full_output=full_path,
                    exit_code=result.exec.exit_code if result.exec else None,
                    duration_s=round(result.exec.duration_s, 3) if result.exec else None))
                self.context.add(Message(role="tool", content=shown, tool_call_id=call.id, name=call.name))
                if result.submitted is not None:
                    return EpisodeEnd(EndReason.SUBMITTED, result.submitted)
                if self.sandbox_restarts > self.cfg.sandbox_restarts_per_iteration:
                    return EpisodeEnd(EndReason.SANDBOX_FAILED, "(the sandbox kept dying; the workspace as it was)",
                                      f"the sandbox died {self.sandbox_restarts} times in this iteration "
                                      f"(limit {self.cfg.sandbox_restarts_per_iteration})")
                if self._stuck(call.name, call.arguments, result):
                    return EpisodeEnd(EndReason.STUCK, "(ended by the stuck detector)",
                                      f"the same {call.name} call gave the same result {self.cfg.stuck_repeats} times")
            turn += 1

    def _run_tool(self, name: str, arguments: str) -> ToolResult:
        """One tool call; a sandbox that dies under it is made anew (within the limit) and the model
        is told what was lost."""
        try:
            with self.stop.interruptible():
                return run_tool(self.tools, self.sandbox, name, arguments)
        except SandboxDied as died:
            self.sandbox_restarts += 1
            detail = str(died)
            if self.sandbox_restarts <= self.cfg.sandbox_restarts_per_iteration:
                self.sandbox.restart()
            self.ledger.append(SandboxRestarted(iteration=self.n, attempt=self.attempt, cause=died.cause,
                                                detail=detail, restarts=self.sandbox_restarts))
            why = {"oom": "it was killed for exceeding its memory limit (OOM)", "exited": "it was stopped or killed",
                   "gone": "it was removed"}.get(died.cause, "it stopped")
            return ToolResult(f"{name}: the sandbox died during this call: {why}. It was made anew from /workspace: "
                              "your files there are kept (build outputs in target/ too); running processes, /tmp "
                              "and anything else outside /workspace are lost.", is_error=True)

    def _cut(self, text: str, call_id: str) -> tuple[str, str | None]:
        """Head and tail for the model; the full text kept in the run directory."""
        head, tail = self.cfg.tool_output_head_chars, self.cfg.tool_output_tail_chars
        if len(text) <= head + tail:
            return text, None
        self.outputs.mkdir(parents=True, exist_ok=True)
        path = self.outputs / f"{self.attempt}-{_safe(call_id)}.txt"
        write_text_durable(path, text)
        cut = len(text) - head - tail
        return f"{text[:head]}\n[... {cut} characters cut; the full output is kept by the harness ...]\n" \
               f"{text[-tail:]}", str(path.relative_to(self.ledger.run_dir))

    def _stuck(self, name: str, args: str, result: ToolResult) -> bool:
        key = hashlib.sha256(f"{name}\0{args}\0{result.text}".encode()).hexdigest()
        self._recent.append(key)
        last = self._recent[-self.cfg.stuck_repeats:]
        return len(last) == self.cfg.stuck_repeats and len(set(last)) == 1


def _safe(s: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in s)[:80]


def read_notes(workspace: Path, notes_file: str) -> str | None:
    p = workspace / notes_file
    try:
        return p.read_text(errors="replace")[-20000:] if p.is_file() else None
    except OSError:
        return None
