"""Web application: the dashboard and its versioned UI components.

Owns the ``web_application_service`` schema; :mod:`.repository` is its only SQL.
"""

from plait.web_application.states import UiComponentKind

__all__ = ["UiComponentKind"]
