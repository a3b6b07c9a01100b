"""What the gateway answers with instead of a model's turn."""

from __future__ import annotations


class GatewayRefusal(Exception):
    """A call the gateway answers with an error: ``status`` is the HTTP status, ``kind`` a short
    machine-readable word (``budget_exhausted``, ``invalid_request``, ``upstream_error``...)."""

    status = 400
    kind = "invalid_request"

    def __init__(self, message: str, *, status: int | None = None, kind: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status
        if kind is not None:
            self.kind = kind


class BadRequest(GatewayRefusal):
    """The request is not one the protocol allows; the message names the field."""
