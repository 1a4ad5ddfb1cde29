"""Integration: the catalog of integration types and configured Integration resources.

Owns the ``integration_service`` schema; :mod:`.repository` is its only SQL. Secrets are
referenced by Kubernetes Secret name and never stored.
"""

from plait.integration.repository import IntegrationDefinition, IntegrationInstance

__all__ = ["IntegrationDefinition", "IntegrationInstance"]
