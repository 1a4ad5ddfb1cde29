"""A diff base that stays small however large the spec is.

Kopf's stock diff base copies the object's whole essence into an annotation, and
annotations are capped at 256 KiB: a 5,000-task WorkflowDefinition cannot be stored
that way (the apiserver refuses the patch, and the object is never reconciled). Plait's
reconciliation is level-based and reads the live spec, so all it needs from the diff
base is "did the spec change": a digest of the spec answers that in 70 bytes.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, cast

import kopf

from plait.kernel.versions import spec_hash

__all__ = ["SpecDigestDiffBaseStorage"]


class SpecDigestDiffBaseStorage(kopf.AnnotationsDiffBaseStorage):
    """Keeps ``{"spec": {"sha256": ...}}`` plus the small metadata Kopf tracks."""

    def build(
        self,
        *,
        body: kopf.Body,
        extra_fields: Iterable[Any] | None = None,
    ) -> kopf.BodyEssence:
        essence = cast(dict[str, Any], super().build(body=body, extra_fields=extra_fields))
        if "spec" in essence:
            essence["spec"] = {"sha256": spec_hash(essence["spec"])}
        # Labels and annotations are users' business, not a reason to reconcile.
        essence.pop("metadata", None)
        return cast(kopf.BodyEssence, essence)
