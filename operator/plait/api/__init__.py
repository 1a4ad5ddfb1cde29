"""The ``plait api`` process: stateless HTTP in front of PostgreSQL (never Kubernetes)."""

from plait.api.app import build_app

__all__ = ["build_app"]
