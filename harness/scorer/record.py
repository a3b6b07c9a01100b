"""The score record: what one scoring of one submission measured, and why it ended as it did."""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field


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
