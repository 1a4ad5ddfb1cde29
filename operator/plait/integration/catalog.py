"""The built-in integration types, as data: what admission checks an Integration against.

The same catalog is seeded into ``integration_service.integration_definitions`` by the
component's migration (the reconciler reads it there); a test keeps the two identical. With
it in code, the admission webhook refuses an unknown type or bad settings without a
database connection.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from plait.resources.schemas import compile_schema

__all__ = ["BUILTIN_TYPES", "IntegrationType", "settings_problems"]


@dataclass(frozen=True)
class IntegrationType:
    """A catalog type: the JSON Schema of its settings, the keys its Secret holds (mounted
    into the tasks that list it) and the key of its webhooks' signing secret (read only by
    ``plait api``, never mounted into a task: a task has no use for it)."""

    type: str
    settings_schema: Mapping[str, Any]
    secret_keys: tuple[str, ...]
    webhook_secret_key: str | None = None


BUILTIN_TYPES: dict[str, IntegrationType] = {
    t.type: t
    for t in (
        IntegrationType(
            "http",
            {
                "$schema": "https://json-schema.org/draft/2020-12/schema",
                "type": "object",
                "required": ["baseUrl"],
                "additionalProperties": False,
                "properties": {
                    "baseUrl": {"type": "string", "format": "uri"},
                    "headers": {"type": "object", "additionalProperties": {"type": "string"}},
                    "timeoutSeconds": {"type": "integer", "minimum": 1},
                    "allowInternal": {"type": "boolean", "default": False},
                },
            },
            ("token",),
        ),
        IntegrationType(
            "slack",
            {
                "$schema": "https://json-schema.org/draft/2020-12/schema",
                "type": "object",
                "additionalProperties": False,
                "properties": {
                    "apiUrl": {
                        "type": "string",
                        "format": "uri",
                        "default": "https://slack.com/api",
                    },
                    "defaultChannel": {"type": "string"},
                    "allowInternal": {"type": "boolean", "default": False},
                },
            },
            ("token",),
            "signingSecret",
        ),
        IntegrationType(
            "github",
            {
                "$schema": "https://json-schema.org/draft/2020-12/schema",
                "type": "object",
                "additionalProperties": False,
                "properties": {
                    "apiUrl": {
                        "type": "string",
                        "format": "uri",
                        "default": "https://api.github.com",
                    },
                    "owner": {"type": "string"},
                    "allowInternal": {"type": "boolean", "default": False},
                },
            },
            ("token",),
            "webhookSecret",
        ),
        IntegrationType(
            "postgres",
            {
                "$schema": "https://json-schema.org/draft/2020-12/schema",
                "type": "object",
                "required": ["host", "database"],
                "additionalProperties": False,
                "properties": {
                    "host": {"type": "string"},
                    "port": {"type": "integer", "minimum": 1, "maximum": 65535, "default": 5432},
                    "database": {"type": "string"},
                    "user": {"type": "string"},
                    "sslmode": {
                        "enum": ["disable", "prefer", "require", "verify-ca", "verify-full"]
                    },
                },
            },
            ("password",),
        ),
        IntegrationType(
            "s3",
            {
                "$schema": "https://json-schema.org/draft/2020-12/schema",
                "type": "object",
                "required": ["bucket"],
                "additionalProperties": False,
                "properties": {
                    "bucket": {"type": "string"},
                    "region": {"type": "string"},
                    "endpoint": {"type": "string", "format": "uri"},
                    "prefix": {"type": "string"},
                },
            },
            ("accessKeyId", "secretAccessKey"),
        ),
        IntegrationType(
            "webhook",
            {
                "$schema": "https://json-schema.org/draft/2020-12/schema",
                "type": "object",
                "additionalProperties": False,
                "properties": {
                    "signatureHeader": {
                        "type": "string",
                        "pattern": "^[A-Za-z0-9-]{1,64}$",
                        "default": "X-Signature",
                    },
                    "algorithm": {"enum": ["sha1", "sha256", "sha512"], "default": "sha256"},
                    "signaturePrefix": {"type": "string", "maxLength": 32, "default": ""},
                    "idHeader": {"type": "string", "pattern": "^[A-Za-z0-9-]{1,64}$"},
                    "eventType": {
                        "type": "string",
                        "minLength": 1,
                        "maxLength": 255,
                        "default": "dev.plait.webhook",
                    },
                },
            },
            (),
            "secret",
        ),
    )
}


def settings_problems(kind: IntegrationType, settings: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(field path, message) for each way ``settings`` break the type's schema."""
    validator = compile_schema(kind.settings_schema)
    errors = sorted(
        validator.iter_errors(dict(settings)), key=lambda e: list(map(str, e.absolute_path))
    )
    return [
        (
            "spec.settings"
            + "".join(f".{p}" if isinstance(p, str) else f"[{p}]" for p in e.absolute_path),
            e.message,
        )
        for e in errors
    ]
