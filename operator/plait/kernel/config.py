"""Settings, read from ``PLAIT_*`` environment variables (the CLI sets the same names).

One documented dataclass-like model: every field says what it is for and its default,
so ``plait --help`` and docs/configuration.md stay truthful.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from plait.errors import ConfigurationError
from plait.kernel.components import COMPONENTS, Component

__all__ = ["Settings"]


class Settings(BaseSettings):
    """Process-wide configuration of a Plait process (operator, API or CLI)."""

    model_config = SettingsConfigDict(env_prefix="PLAIT_", extra="ignore", frozen=True)

    database_url: SecretStr | None = Field(
        default=None,
        description="libpq URL of the shared database (schema-per-component mode).",
    )
    database_owner_role: str = Field(
        default="plait_owner",
        description="Role that owns Plait's schemas; migrations run as it (SET ROLE). "
        "Empty: the connecting user owns them.",
    )
    database_pool_min: int = Field(default=1, ge=0, description="Connections kept open.")
    database_pool_max: int = Field(default=10, ge=1, description="Upper bound of the pool.")
    migrate_on_start: bool = Field(
        default=False,
        description="Apply pending migrations when the operator starts (off when a "
        "migration Job does it, as in the Helm chart).",
    )
    log_level: str = Field(default="INFO", description="Python logging level name.")

    def database_url_for(
        self, component: Component, environ: Mapping[str, str] | None = None
    ) -> str:
        """DSN for one component: ``PLAIT_DATABASE_URL_<COMPONENT>`` or the shared one."""
        env = os.environ if environ is None else environ
        specific = env.get(f"PLAIT_DATABASE_URL_{component.env_suffix}")
        if specific:
            return specific
        if self.database_url is None:
            raise ConfigurationError(
                f"no database configured for component {component.name!r}: set "
                f"PLAIT_DATABASE_URL (shared) or PLAIT_DATABASE_URL_{component.env_suffix}"
            )
        return self.database_url.get_secret_value()

    def database_urls(self, environ: Mapping[str, str] | None = None) -> dict[str, str]:
        """DSN of every component, keyed by component name."""
        return {c.name: self.database_url_for(c, environ) for c in COMPONENTS}
