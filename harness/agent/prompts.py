"""What the model reads at the start of every iteration.

The stable part (system prompt, task, API contract, rules, crates) comes first and is marked for
prompt caching; the changing part (the table of earlier submissions, the last score, the agent's own
notes) comes after it.
"""

from __future__ import annotations

from harness.paths import SKELETON
from harness.scorer.record import Score
from harness.state import Scored, best_valid

SYSTEM = """You are a performance engineer working autonomously on a long optimization task. You work in a \
sandboxed Linux machine through tools. Each iteration you improve the code, measure it with the dev \
benchmark, and end the iteration by submitting; an official scorer you cannot see then benchmarks the \
submission on hidden queries. Iterations continue for as long as the budget lasts: plan for many of them, \
keep notes for your future self, and prefer measured, incremental progress with occasional structural jumps."""

LONG_HORIZON_TASK = """# Task
Make the vector database in /workspace as fast as possible: maximise queries per second (QPS) on the \
hidden benchmark while keeping recall@10 >= {recall_floor}. A submission below the recall floor is invalid.

## The machine the server runs on
{hardware}
The official benchmark pins the server to {server_cpus} CPU(s) and drives it from separate cores at \
concurrency {concurrency}, with a memory limit of {memory_limit}.

## Tools
- `bash`: shell commands in /workspace (no network; crates come from a vendored set, `cargo build --release \
--offline` works).
- `read_file`, `write_file`, `str_replace`: edit files.
- `submit(message)`: end the iteration; the workspace is committed and scored. Say what you changed and why.

## Measuring before you submit
`devbench` builds the workspace in release mode, starts the server, loads the dev base vectors \
({n_base:,} x {dim}) from /data, runs the dev queries and prints QPS and recall@10 (`devbench --help`). \
It is a dev measurement on queries you can see, not the official score. `devbench --quick` builds \
without LTO: about 4x faster to compile, the same recall, but lower QPS than the scorer's build of your \
Cargo.toml profile (compare QPS within one mode).

## Notes across iterations
Each iteration starts a fresh conversation. `{notes_file}` in the workspace is yours: what you tried, what \
you measured, what to try next. It is shown to you at the start of every iteration.

## The API contract (skeleton/API.md)
{api_md}

## Vendored crates you may use
{crates}
"""

KCORES_TASK = """# Task (KCORES vector-db-bench setting)
Implement and optimise the vector database in the project so that it answers SIFT-style L2 nearest-\
neighbour queries as fast as possible with recall@10 >= {recall_floor}. You have {tool_budget} tool calls \
in total; `finish` (or the last call) runs the final benchmark on your code.

## The machine
{hardware}

## The API contract
{api_md}

## Vendored crates you may use
{crates}
"""


def history_table(rows: list[Scored], limit: int = 60) -> str:
    """Earlier submissions, newest last: iteration, status, QPS, recall, the model's message."""
    if not rows:
        return "No submissions yet: this is the first iteration."
    shown = rows[-limit:]
    lines = ["| iter | status | QPS | recall@10 | message |", "|---|---|---|---|---|"]
    for r in shown:
        s = r.score
        qps = f"{s.qps:,.0f}" if s.qps is not None else "-"
        rec = f"{s.recall:.4f}" if s.recall is not None else "-"
        msg = " ".join(r.message.split())[:160].replace("|", "/")
        lines.append(f"| {r.iteration} | {s.status.value} | {qps} | {rec} | {msg} |")
    head = f"{len(rows)} submissions so far" + (f" ({len(rows) - len(shown)} older ones not shown)" if
                                                 len(rows) > len(shown) else "")
    if (b := best_valid(rows)) is not None:
        head += f"; best valid: {b.qps:,.0f} QPS at iteration {b.iteration}"
    return head + "\n\n" + "\n".join(lines)


def last_score_text(score: Score | None) -> str:
    if score is None:
        return "No score yet."
    data = score.model_dump(mode="json")
    keys = ("status", "reason", "qps", "qps_spread", "recall", "p50_ms", "p95_ms", "p99_ms", "phase_seconds",
            "error_counts")
    lines = [f"- {k}: {data.get(k)}" for k in keys if data.get(k) not in (None, {}, [])]
    if score.anchor is not None:
        a = score.anchor
        lines.append(f"- relative to the fixed anchor build, measured in {a.rounds} interleaved rounds on the same "
                     f"cores: {a.ratio:.3f}x (95% interval {a.low:.3f}-{a.high:.3f}); this ratio, not the raw QPS, "
                     "is what survives the machine's noise")
    if score.step is not None:
        st, sp = score.step, score.step.paired
        said = ("confirmed: it is faster than the best before it beyond the measurement's noise"
                if st.verdict.value == "confirmed" else
                "within noise: the rematch could not tell it from the best before it")
        lines.append(f"- new best claimed, rematched against {sp.against} in {sp.rounds} paired rounds: "
                     f"{sp.ratio:.3f}x (95% interval {sp.low:.3f}-{sp.high:.3f}), {said}")
    lines += [f"- finding: {f}" for f in score.findings]
    tail = score.server_log_tail.strip()
    if tail:
        lines.append("- server log tail:\n```\n" + tail[-3000:] + "\n```")
    return "\n".join(lines)


def iteration_prompt(n: int, history: list[Scored], last_score: Score | None, notes: str | None,
                     notes_file: str) -> str:
    notes_text = notes.strip() if notes and notes.strip() else f"({notes_file} is empty)"
    return (f"# Iteration {n}\n\n## Earlier submissions\n{history_table(history)}\n\n"
            f"## The last official score\n{last_score_text(last_score)}\n\n"
            f"## Your notes ({notes_file})\n{notes_text[-8000:]}\n\n"
            "Work, measure with devbench, update your notes, then call `submit`.")


def api_md() -> str:
    return (SKELETON / "API.md").read_text()
