"""Every exception Plait raises on purpose, in one place.

Callers catch :class:`PlaitError` for "anything Plait refused or could not do", or one of
the narrower classes below when they can act on it. Messages are written for the person
who has to fix the problem: they name the thing, the problem, and what to do.
"""

__all__ = [
    "ChecksumMismatchError",
    "ClusterError",
    "ConfigurationError",
    "DatabaseAheadError",
    "DatabaseError",
    "DispatchError",
    "MigrationError",
    "NotFoundError",
    "PermanentDispatchError",
    "PlaitError",
    "ValidationError",
]


class PlaitError(Exception):
    """Base class of all errors raised by Plait."""


class ConfigurationError(PlaitError):
    """A setting is missing or has a value Plait cannot use."""


class DatabaseError(PlaitError):
    """PostgreSQL could not be reached or refused an operation."""


class MigrationError(DatabaseError):
    """The schema cannot be brought to the version this code expects."""


class DatabaseAheadError(MigrationError):
    """The database holds migrations this code does not know: it was migrated by newer code."""


class ChecksumMismatchError(MigrationError):
    """An applied migration file was edited afterwards; the database and the file disagree."""


class NotFoundError(PlaitError):
    """The row or resource asked for does not exist."""


class ValidationError(PlaitError):
    """A resource, event or request is malformed; nothing was changed."""


class ClusterError(PlaitError):
    """The local Kubernetes control plane could not be built, started or reached."""


class DispatchError(PlaitError):
    """An event could not be dispatched this time; it is retried with backoff."""


class PermanentDispatchError(DispatchError):
    """Retrying cannot help (a filter or mapping fails on this event): dead-letter it now."""
