"""The eight components of Plait and the PostgreSQL schema each one owns.

This is the single list every other part (configuration, migrations, roles, docs) reads,
so a component is added or renamed here and nowhere else.
"""

from dataclasses import dataclass

__all__ = ["COMPONENTS", "Component", "component_by_name"]


@dataclass(frozen=True, slots=True)
class Component:
    """A component: its Python package name and the schema it alone may touch."""

    name: str
    schema: str
    summary: str

    @property
    def env_suffix(self) -> str:
        """Suffix of its per-component DSN variable, e.g. ``EVENT_PROCESSING``."""
        return self.name.upper()

    @property
    def role(self) -> str:
        """The database role the running component connects as (before any prefix)."""
        return f"plait_{self.name}"


COMPONENTS: tuple[Component, ...] = (
    Component(
        "workflow_orchestrator",
        "workflow_orchestrator_service",
        "workflow definitions and instances, the DAG engine, subscriptions, triggers",
    ),
    Component(
        "event_processing",
        "event_processing_service",
        "event ingestion, definitions, sequences, the queue, dead letters",
    ),
    Component(
        "task_execution",
        "task_execution_service",
        "task definitions and task instances run as Kubernetes Jobs",
    ),
    Component(
        "integration",
        "integration_service",
        "the catalog of integration types and configured integrations",
    ),
    Component("auth", "auth_service", "users, roles, permissions, API tokens"),
    Component(
        "testing_framework",
        "testing_framework_service",
        "workflow tests, their runs and case results",
    ),
    Component("web_application", "web_application_service", "the dashboard and its UI components"),
    Component("observability", "observability_service", "logs, metrics and traces of Plait itself"),
)

_BY_NAME = {c.name: c for c in COMPONENTS}


def component_by_name(name: str) -> Component:
    """Look a component up by package name (``event_processing``) or schema name."""
    key = name.removesuffix("_service").replace("-", "_")
    try:
        return _BY_NAME[key]
    except KeyError:
        known = ", ".join(_BY_NAME)
        raise KeyError(f"unknown component {name!r}; known components: {known}") from None
