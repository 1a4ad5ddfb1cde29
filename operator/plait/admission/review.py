"""One admission decision: an AdmissionReview request in, an AdmissionResponse out.

What is decided here, in order:

1. An UPDATE that leaves ``spec`` as it was (finalizers, annotations, labels: the operator's
   own bookkeeping) is admitted without checks, so an object stored under older rules can
   always be finalized and deleted.
2. The content: everything :mod:`plait.resources.validation` finds inside the object, and
   for an Integration its catalog type and settings. Any such problem refuses the request.
3. Access (:mod:`plait.admission.access`): each ServiceAccount, Secret and Integration the
   object would make the operator use must be usable by the requesting user. A missing
   permission refuses the request, naming the field, the object and the permission.
4. References to other objects that do not exist yet (a TaskDefinition, an Integration, a
   WorkflowDefinition) are *warnings*: objects applied together arrive in any order, and
   the reconciler reports ``ReferenceNotFound`` until the referent appears.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from plait.admission.access import Need, UserInfo, needs
from plait.integration.catalog import BUILTIN_TYPES, settings_problems
from plait.integration.credentials import secret_ref_problems
from plait.resources.integration import IntegrationSpec
from plait.resources.validation import Problem, check_resource, parse_spec, references
from plait.resources.workflow import MAX_WORKFLOW_DEPTH

__all__ = ["Authorizer", "Reader", "review"]

#: Reads referenced objects: (namespace, {(kind, name)}) -> {(kind, name): spec} of those found.
Reader = Callable[[str, set[tuple[str, str]]], Awaitable[dict[tuple[str, str], Mapping[str, Any]]]]
#: Asks the API server whether a user holds a permission: (user, namespace, need) -> allowed.
Authorizer = Callable[[UserInfo, str, Need], Awaitable[bool]]

#: Most problems listed in one refusal (the rest are counted).
MAX_LISTED = 10


def _listing(problems: list[str]) -> str:
    shown = "; ".join(problems[:MAX_LISTED])
    more = len(problems) - MAX_LISTED
    return shown + (f"; and {more} more" if more > 0 else "")


def _integration_problems(obj: Mapping[str, Any]) -> list[Problem]:
    """The type is a catalog type, the settings match its schema and secretRef names only
    its secret keys (built in, no lookup)."""
    spec = parse_spec("Integration", obj["spec"])
    assert isinstance(spec, IntegrationSpec)
    kind = BUILTIN_TYPES.get(spec.type)
    if kind is None:
        known = ", ".join(sorted(BUILTIN_TYPES))
        message = f"{spec.type!r} is not an integration type (types: {known})"
        return [Problem("spec.type", message, "NotSupported")]
    found = settings_problems(kind, spec.settings) + secret_ref_problems(spec, kind)
    return [Problem(path, message) for path, message in found]


def _denial(need: Need, user: UserInfo, namespace: str) -> str:
    return (
        f"{need.path}: user {user.username!r} may not use {need.what}: that needs the "
        f"permission '{need.permission()}' in namespace {namespace!r}"
    )


async def _with_called_workflows(
    namespace: str, found: dict[tuple[str, str], Mapping[str, Any]], read: Reader
) -> dict[tuple[str, str], Mapping[str, Any]]:
    """``found`` and the WorkflowDefinitions its sub-workflows call, level by level, as
    deep as sub-workflows may nest: what the cycle and depth checks walk."""
    known = dict(found)
    frontier = [spec for (kind, _), spec in found.items() if kind == "WorkflowDefinition"]
    for _ in range(MAX_WORKFLOW_DEPTH):
        wanted = {
            ref
            for spec in frontier
            for ref in references("WorkflowDefinition", spec)
            if ref[0] == "WorkflowDefinition" and ref not in known
        }
        if not wanted:
            break
        more = await read(namespace, wanted)
        known.update(more)
        frontier = list(more.values())
    return known


async def review(request: Mapping[str, Any], read: Reader, authorize: Authorizer) -> dict[str, Any]:
    """The ``response`` of an AdmissionReview for ``request``."""
    response: dict[str, Any] = {"uid": request.get("uid", ""), "allowed": True}
    obj = request.get("object") or {}
    old = request.get("oldObject") or {}
    if request.get("operation") == "UPDATE" and obj.get("spec") == old.get("spec"):
        return response
    namespace = str(request.get("namespace") or "")
    kind = str(obj.get("kind") or "")
    spec: Mapping[str, Any] = obj["spec"] if isinstance(obj.get("spec"), Mapping) else {}
    found = await read(namespace, references(kind, spec)) if spec else {}
    if kind == "WorkflowDefinition":
        found = await _with_called_workflows(namespace, found, read)
    problems = check_resource(obj, lambda k, n: found.get((k, n)))
    invalid = [str(p) for p in problems if p.reason != "NotFound"]
    warnings = [
        f"{p} (admitted; it waits until that exists)" for p in problems if p.reason == "NotFound"
    ]
    if not invalid and kind == "Integration":
        invalid += [str(p) for p in _integration_problems(obj)]
    if invalid:
        return {**response, "allowed": False, "status": {"code": 422, "message": _listing(invalid)}}
    user = UserInfo.from_review(request.get("userInfo") or {})
    wanted = needs(parse_spec(kind, spec))
    verdicts = await asyncio.gather(*(authorize(user, namespace, n) for n in wanted))
    denied = [_denial(n, user, namespace) for n, ok in zip(wanted, verdicts, strict=True) if not ok]
    if denied:
        return {**response, "allowed": False, "status": {"code": 403, "message": _listing(denied)}}
    if warnings:
        response["warnings"] = warnings
    return response
