"""The score record: what one scoring of one submission measured, and why it ended as it did."""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, SerializerFunctionWrapHandler, model_serializer


class Status(StrEnum):
    VALID = "valid"  # recall at or above the floor
    INVALID = "invalid"  # measured, but recall below the floor (a red cross)
    BUILD_FAILED = "build_failed"
    BUILD_TIMEOUT = "build_timeout"
    START_TIMEOUT = "start_timeout"
    CRASHED = "crashed"
    LOAD_FAILED = "load_failed"
    BAD_RESPONSE = "bad_response"
    OOM = "oom"
    CHEAT_SUSPECTED = "cheat_suspected"
    RULE_VIOLATION = "rule_violation"
    TIMEOUT = "timeout"
    ERROR = "error"  # the harness itself failed: never the submission's fault


class QpsSource(StrEnum):
    """Which timed passes the record's QPS is the median of."""

    ALL_PASSES = "all_passes"  # every pass: the caching check vouched for the repeated ones (or there were none)
    FIRST_PASS = "first_pass"  # the first pass only, where every query was new to the server


class QpsConfidence(StrEnum):
    NORMAL = "normal"
    LOW = "low"  # every pass the QPS comes from was shorter than the scorer's minimum timed pass


class Verdict(StrEnum):
    """A new best valid score, rematched against the incumbent best in paired rounds."""

    CONFIRMED = "confirmed"  # the interval's lower bound is above 1 + the minimum effect
    WITHIN_NOISE = "within_noise"  # it is not: the step may be the machine's noise


class Paired(BaseModel):
    """Paired, interleaved rounds of this submission against another build on the same server CPUs
    (each round a short timed pass on each, in a random order): the ratio is this one's QPS over
    the other's."""

    model_config = ConfigDict(extra="forbid")
    against: str = Field(description="'anchor', or which build the other side is ('iteration 7', a path)")
    against_tree: str
    rounds: int
    ratio: float = Field(description="median over the rounds of this QPS / the other's")
    low: float = Field(description="bootstrap 95% interval of the median ratio: low end")
    high: float
    qps: list[float] = Field(description="this side's QPS, round by round")
    other_qps: list[float] = Field(description="the other side's QPS, round by round")
    seconds: float = Field(description="wall time of the rounds")


class StepCheck(BaseModel):
    """The verdict on a score that claims a new best: its rematch against the incumbent best."""

    model_config = ConfigDict(extra="forbid")
    verdict: Verdict
    against_iteration: int | None = None
    min_effect: float = 0.0
    paired: Paired


class VerifiedEntry(BaseModel):
    """One of the top submissions, rescored at a run's end in paired rounds."""

    model_config = ConfigDict(extra="forbid")
    label: str
    iteration: int | None = None
    tree: str
    qps: float | None = Field(None, description="median of its rounds' QPS")
    recall: float | None = Field(None, description="the worst round's recall")
    relative: Paired | None = Field(None, description="against the anchor")
    problems: list[str] = Field(default_factory=list)


class Verification(BaseModel):
    """The top K valid submissions of a run rescored in paired rounds against each other and the
    anchor: the run's verified best is the one with the highest ratio to the anchor."""

    model_config = ConfigDict(extra="forbid")
    entries: list[VerifiedEntry]
    best: str | None = None  # the label of the verified best
    best_iteration: int | None = None
    best_vs_next: Paired | None = Field(None, description="the verified best against the runner-up")
    told_apart: bool | None = Field(None, description="whether best_vs_next's interval excludes 1")
    anchor_tree: str = ""
    rounds: int = 0
    seconds: float = 0.0


class Hardware(BaseModel):
    """Where a score was measured; scores from different fingerprints are not compared silently."""

    model_config = ConfigDict(extra="forbid")
    cpu_model: str
    host_cpus: int
    server_cpus: str
    loadgen_cpus: str
    memory_limit: str
    runner: str
    image_id: str | None = None


class PassResult(BaseModel):
    model_config = ConfigDict(extra="forbid")
    sent: int
    completed: int
    errors: int
    elapsed_s: float
    qps: float
    timed_out: bool
    p50_ms: float | None = None
    p95_ms: float | None = None
    p99_ms: float | None = None


class Score(BaseModel):
    """One scoring of one submission. ``--json`` prints exactly this."""

    model_config = ConfigDict(extra="forbid")
    status: Status
    reason: str
    valid: bool = False
    qps: float | None = None
    qps_spread: float | None = Field(None, description="max/min QPS over the timed passes")
    qps_source: QpsSource | None = Field(None, description="the passes the QPS is the median of")
    qps_confidence: QpsConfidence | None = Field(None, description="low: measured over too short a time")
    recall: float | None = None
    recall_floor: float
    p50_ms: float | None = None
    p95_ms: float | None = None
    p99_ms: float | None = None
    passes: list[PassResult] = Field(default_factory=list)
    queries: int = 0
    phase_seconds: dict[str, float] = Field(default_factory=dict)
    distance_kind: str | None = Field(None, description="euclidean or squared, as the server returned them")
    error_counts: dict[str, int] = Field(default_factory=dict)
    error_samples: list[dict[str, object]] = Field(default_factory=list)
    findings: list[str] = Field(default_factory=list, description="cheat and rule checks that fired")
    server_log_tail: str = ""
    protocol: str
    dataset: str
    dataset_sha256: str
    tree_hash: str
    settings_hash: str
    hardware: Hardware
    scored_at: str
    cached: bool = False
    # Paired measurement against the anchor build (strict protocol's default): the noise-proof figure.
    relative_qps: float | None = Field(None, description="QPS relative to the anchor build (median round ratio)")
    anchor: Paired | None = None
    step: StepCheck | None = Field(None, description="set by a run when this score claims a new best")
    # Which machine-wide scorer slot measured it, and when (UTC, ISO): on one machine two
    # measurements never overlap (several runs at once take turns).
    slot: str | None = None
    measured_from: str | None = None
    measured_to: str | None = None
    # A KCORES entry: its files that were not laid over the skeleton, each with why (the original
    # never let the model write them).
    left_out: list[str] | None = None
    # What of the protocol this scoring could not do as the original did, and why (kcores: its 4
    # server CPUs on a machine with fewer).
    not_as_original: list[str] | None = None

    @model_serializer(mode="wrap")
    def _leave_out_unset_additions(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # Fields added after the first records left out while unset: a record that does not use
        # them (a failed build, a stub, an old record read back) serializes exactly as before.
        data: dict[str, Any] = handler(self)
        for name in LATER_FIELDS:
            if data.get(name) is None:
                data.pop(name, None)
        return data


LATER_FIELDS = ("qps_source", "qps_confidence", "relative_qps", "anchor", "step", "slot", "measured_from",
                "measured_to", "left_out",
                "not_as_original")
