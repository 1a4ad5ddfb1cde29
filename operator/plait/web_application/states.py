"""Kinds of dashboard components.

Declared once here; the CHECK constraint in sql/web_application_service lists the same
values and a test keeps the two equal.
"""

from enum import StrEnum

__all__ = ["UiComponentKind"]


class UiComponentKind(StrEnum):
    """What a ui_components row renders as (``ui_components.kind``)."""

    PAGE = "page"
    PANEL = "panel"
    CHART = "chart"
    TABLE = "table"
    FORM = "form"
