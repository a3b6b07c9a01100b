"""The model gateway: scaffolds' agents reach the run's model only through it (see ``server``)."""

from harness.gateway.server import Gateway, Session

__all__ = ["Gateway", "Session"]
