"""Fixtures of the resource tests."""

from __future__ import annotations

from typing import Any

import pytest

from tests.resources.helpers import ExampleLookup, load_examples


@pytest.fixture
def examples() -> dict[tuple[str, str], dict[str, Any]]:
    return load_examples()


@pytest.fixture
def lookup(examples: dict[tuple[str, str], dict[str, Any]]) -> ExampleLookup:
    return ExampleLookup(examples)
