"""Plait: a Kubernetes-native, event-driven workflow orchestrator backed by PostgreSQL.

The public surface is deliberately small; components and the kernel are reached through
their own packages (``plait.kernel``, ``plait.workflow_orchestrator``, ...).
"""

from importlib.metadata import PackageNotFoundError, version

from plait.errors import ConfigurationError, PlaitError

try:
    __version__ = version("plait")
except PackageNotFoundError:  # running from a source tree without an install
    __version__ = "0.0.0"

API_GROUP = "plait.dev"
API_VERSION = "v1alpha1"

__all__ = ["API_GROUP", "API_VERSION", "ConfigurationError", "PlaitError", "__version__"]
