"""Auth: users, roles and permissions of the API and dashboard.

Owns the ``auth_service`` schema; :mod:`.repository` is its only SQL.
"""

from plait.auth.repository import Role, User

__all__ = ["Role", "User"]
