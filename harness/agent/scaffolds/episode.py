"""An iteration driven by a scaffold: a coding agent runs in the sandbox until it submits or exits.

The harness writes the iteration's prompt (the same system text, task, history and notes as the
built-in loop's, plus how to submit) into the sandbox, opens a gateway session, and runs the agent
under the scaffold's wall-time limit. The gateway meters and records every model call and ends the
session when the agent runs ``submit``, the budget or a per-iteration limit is reached, or the model
stops; ``staircase-agent-run`` then stops the agent. What the agent printed and its own trajectory
file (where it writes one) are kept in ``iterations/NNNN/`` beside the gateway's records.
"""

from __future__ import annotations

from dataclasses import dataclass

from harness.agent.episode import EpisodeEnd
from harness.agent.scaffolds import adapters
from harness.budget import Budget, BudgetExhausted
from harness.config import RunConfig
from harness.events import EndReason, SandboxRestarted
from harness.gateway import Gateway
from harness.ledger import Ledger, write_text_durable
from harness.sandbox.base import ExecResult, Sandbox, SandboxDied, SandboxError
from harness.stop import StopSignals


@dataclass
class _Context:
    compactions: int = 0  # the agent manages its own context: the harness compacts nothing


class ScaffoldEpisode:
    """Iteration ``n``'s run of the scaffold's agent (its ``attempt``-th start)."""

    def __init__(self, n: int, attempt: int, gateway: Gateway, sandbox: Sandbox, cfg: RunConfig, ledger: Ledger,
                 budget: Budget, stop: StopSignals) -> None:
        self.n, self.attempt = n, attempt
        self.gateway, self.sandbox, self.cfg = gateway, sandbox, cfg
        self.ledger, self.budget, self.stop = ledger, budget, stop
        self.tool_calls = 0  # the agent's actions as the gateway saw them (a tool call, or a turn without one)
        self.sandbox_restarts = 0
        self.context = _Context()
        self.result: ExecResult | None = None

    def run(self, system: str, task: str, prompt: str) -> EpisodeEnd:
        self.stop.checkpoint()
        try:
            self.budget.check()
        except BudgetExhausted as e:
            return EpisodeEnd(EndReason.BUDGET, f"(budget exhausted: {e.reason})", e.reason)
        text = f"{system}\n\n{task}\n\n{prompt}\n{adapters.SCAFFOLD_NOTE}"
        self.sandbox.exec(f"rm -rf {adapters.WORK} && mkdir -p {adapters.WORK}", timeout_s=60)
        self.sandbox.write_file(adapters.PROMPT_FILE, text)
        self.gateway.begin(self.n, self.attempt, max_actions=self.cfg.budget.max_tool_calls_per_iteration,
                           max_tokens=self.cfg.scaffold.max_tokens_per_iteration)
        died: SandboxDied | None = None
        try:
            with self.stop.interruptible():
                self.result = self.sandbox.exec(adapters.command(self.cfg, self.n),
                                                timeout_s=self.cfg.scaffold.timeout_s)
        except SandboxDied as e:
            died = e
        finally:
            session = self.gateway.finish()
        assert session is not None
        self.tool_calls = session.actions
        if died is not None:
            return self._sandbox_died(died)
        self._keep_outputs()
        if session.error is not None:
            raise session.error  # the provider is gone past its outage limit: the run stops, resumably
        r = self.result
        assert r is not None
        if session.end is not None:
            message = session.message or f"({session.end.value}: {session.detail})"
            return EpisodeEnd(session.end, message, session.detail)
        if r.timed_out:
            return EpisodeEnd(EndReason.TIMEOUT, "(the agent ran past its time limit; the workspace as it was)",
                              f"stopped after scaffold.timeout_s = {self.cfg.scaffold.timeout_s:g} s")
        tail = (r.stderr.strip() or r.stdout.strip())[-2000:]
        if session.calls == 0:
            return EpisodeEnd(EndReason.MODEL_STOPPED, "(the agent exited without calling the model)",
                              f"{self.cfg.agent.scaffold} exited with status {r.exit_code} before its first model "
                              f"call: {tail}")
        return EpisodeEnd(EndReason.AGENT_EXITED, "(the agent exited without submit; the workspace as it was)",
                          f"exit status {r.exit_code}")

    def _sandbox_died(self, died: SandboxDied) -> EpisodeEnd:
        self.sandbox_restarts += 1
        self.sandbox.restart()
        self.ledger.append(SandboxRestarted(iteration=self.n, attempt=self.attempt, cause=died.cause,
                                            detail=str(died), restarts=self.sandbox_restarts))
        return EpisodeEnd(EndReason.SANDBOX_FAILED, "(the sandbox died under the agent; the workspace as it was)",
                          str(died))

    def _keep_outputs(self) -> None:
        """The agent's printed output and its trajectory file, beside the gateway's records."""
        folder = self.ledger.iteration_dir(self.n)
        r = self.result
        if r is not None:
            log = (f"# exit status {r.exit_code}, {r.duration_s:.1f} s{' (timed out)' if r.timed_out else ''}\n"
                   f"## stdout\n{r.stdout}\n## stderr\n{r.stderr}\n")
            write_text_durable(folder / f"agent-{self.attempt}.log", log)
        path = adapters.TRAJECTORY[self.cfg.agent.scaffold]
        try:
            trajectory = self.sandbox.read_file(path)
        except SandboxError:
            return  # the agent wrote none (or too large a one: its output log says what it did)
        suffix = path.rsplit(".", 1)[-1]
        write_text_durable(folder / f"trajectory-{self.attempt}.{suffix}", trajectory)
