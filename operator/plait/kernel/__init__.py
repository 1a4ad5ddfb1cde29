"""The shared kernel under every component: configuration, components, database, Kubernetes."""

from plait.kernel.components import COMPONENTS, Component, component_by_name
from plait.kernel.config import Settings

__all__ = ["COMPONENTS", "Component", "Settings", "component_by_name"]
