"""How an EventDefinition's JSON Schema is compiled: one function, for the event API and
for validation, so a schema is accepted if and only if the event API can use it."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import jsonschema
import referencing.exceptions
from jsonschema.exceptions import SchemaError
from jsonschema.protocols import Validator

__all__ = ["compile_schema", "schema_problems"]


def compile_schema(schema: Mapping[str, Any]) -> Validator:
    """A validator for ``schema``: the draft its ``$schema`` names (2020-12 by default),
    checked against that draft's meta-schema, with format checking on.

    Raises :class:`jsonschema.exceptions.SchemaError` when the schema itself is invalid.
    """
    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    cls.check_schema(dict(schema))
    return cls(dict(schema), format_checker=cls.FORMAT_CHECKER)


def _references(value: Any, path: str) -> Iterator[tuple[str, str]]:
    if isinstance(value, Mapping):
        for key, item in value.items():
            if key in ("$ref", "$dynamicRef") and isinstance(item, str):
                yield f"{path}.{key}", item
            elif key not in ("const", "enum", "default", "examples"):
                yield from _references(item, f"{path}.{key}")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _references(item, f"{path}[{i}]")


def schema_problems(schema: Mapping[str, Any], path: str) -> list[tuple[str, str]]:
    """(field path, message) for each reason the event API could not use ``schema``.

    The meta-schema check first; then every ``$ref`` must resolve inside the schema itself,
    since Plait fetches nothing from the network (an unresolvable reference would fail
    every event of the type, not the definition).
    """
    try:
        validator = compile_schema(schema)
    except SchemaError:
        # check_schema stops at the first error; list them all, found the same way.
        cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
        meta = jsonschema.validators.validator_for(cls.META_SCHEMA, default=cls)
        checker = meta(cls.META_SCHEMA, format_checker=meta.FORMAT_CHECKER)
        found = []
        for error in checker.iter_errors(dict(schema)):
            best = jsonschema.exceptions.best_match([error]) or error
            where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in best.absolute_path)
            found.append((path + where, best.message))
        return sorted(found)
    except RecursionError:
        return [(path, "schema is nested too deeply")]
    problems = []
    for where, ref in _references(schema, path):
        if not ref.startswith("#"):
            problems.append((where, f"{ref!r}: only references within the schema (#...) work"))
            continue
        try:
            validator.evolve(schema={**schema, "$ref": ref}).is_valid(None)
        except referencing.exceptions.Unresolvable:
            problems.append((where, f"{ref!r} does not resolve within the schema"))
    return problems
