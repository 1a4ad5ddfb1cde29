"""Helpers of the resource tests: the example files and a lookup over them."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"


def load_examples() -> dict[tuple[str, str], dict[str, Any]]:
    """(kind, name) -> the example object, for every file under examples/."""
    found: dict[tuple[str, str], dict[str, Any]] = {}
    for path in sorted(EXAMPLES.glob("*.yaml")):
        for obj in yaml.safe_load_all(path.read_text()):
            found[(obj["kind"], obj["metadata"]["name"])] = obj
    return found


class ExampleLookup:
    """A lookup callback answering from the examples, recording what was asked."""

    def __init__(self, objects: Mapping[tuple[str, str], Mapping[str, Any]]) -> None:
        self.objects = objects
        self.asked: list[tuple[str, str]] = []

    def __call__(self, kind: str, name: str) -> Mapping[str, Any] | None:
        self.asked.append((kind, name))
        obj = self.objects.get((kind, name))
        return None if obj is None else obj["spec"]
