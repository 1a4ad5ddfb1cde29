"""What an object lets the operator do on its author's behalf, and whether they may.

The operator creates task Jobs with its own rights. So that nobody reaches, through a
workflow, a ServiceAccount, a Secret or an Integration's credentials they could not use
directly, admission asks the API server (a SubjectAccessReview with the request's user,
groups, uid and extra) whether the *requesting user* holds the permission Kubernetes or
Plait requires for each:

- running a task as a ServiceAccount other than ``default``, or with a ServiceAccount
  token mounted (a template's or a WorkflowDefinition's ``automountServiceAccountToken``):
  ``create pods`` in the namespace (what Kubernetes itself requires to run a Pod as a
  ServiceAccount);
- an environment variable from a Secret key (``secretKeyRef``): ``get`` on that Secret;
- a task that lists an Integration, or a workflow's ``artifactRepository``: the custom
  verb ``use`` on ``integrations.plait.dev/<name>``;
- an Integration's own ``secretRef``: ``get`` on that Secret.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from plait import API_GROUP
from plait.resources.common import ContainerTemplate, PlaitModel
from plait.resources.integration import IntegrationSpec
from plait.resources.task import TaskDefinitionSpec
from plait.resources.workflow import WorkflowDefinitionSpec

__all__ = ["Need", "UserInfo", "needs", "subject_access_review"]


@dataclass(frozen=True)
class Need:
    """One permission the requesting user must hold, and the field that asks for it."""

    path: str
    verb: str
    resource: str
    name: str = ""
    group: str = ""
    what: str = ""
    """What the field would give access to, for the message (``ServiceAccount "x"``)."""

    def permission(self) -> str:
        """The permission as RBAC reads it: ``get secrets/db``, ``use integrations.plait.dev/x``."""
        resource = f"{self.resource}.{self.group}" if self.group else self.resource
        return f"{self.verb} {resource}" + (f"/{self.name}" if self.name else "")


@dataclass(frozen=True)
class UserInfo:
    """Who sent the request, as the API server authenticated them (AdmissionReview)."""

    username: str
    uid: str = ""
    groups: tuple[str, ...] = ()
    extra: Mapping[str, tuple[str, ...]] | None = None

    @classmethod
    def from_review(cls, info: Mapping[str, Any]) -> UserInfo:
        extra = info.get("extra") or {}
        return cls(
            username=str(info.get("username") or ""),
            uid=str(info.get("uid") or ""),
            groups=tuple(info.get("groups") or ()),
            extra={str(k): tuple(v or ()) for k, v in extra.items()},
        )


def _template_needs(template: ContainerTemplate, path: str) -> Iterator[Need]:
    account = template.service_account_name or "default"
    if account != "default" or template.automount_service_account_token:
        field = "serviceAccountName" if account != "default" else "automountServiceAccountToken"
        yield Need(
            f"{path}.{field}",
            "create",
            "pods",
            what=f"ServiceAccount {account!r} (run a pod as it)",
        )
    for i, env in enumerate(template.env or ()):
        if env.secret_key_ref is not None:
            name = env.secret_key_ref.name
            yield Need(
                f"{path}.env[{i}].secretKeyRef.name",
                "get",
                "secrets",
                name,
                what=f"Secret {name!r}",
            )
    for i, ref in enumerate(template.integrations or ()):
        yield Need(
            f"{path}.integrations[{i}].name",
            "use",
            "integrations",
            ref.name,
            API_GROUP,
            what=f"Integration {ref.name!r} (its settings and credentials)",
        )


def _http_need(name: str, path: str) -> Need:
    """An http task sends its Integration's token: the same ``use`` as listing it."""
    return Need(
        f"{path}.integration",
        "use",
        "integrations",
        name,
        API_GROUP,
        what=f"Integration {name!r} (its settings and credentials)",
    )


def needs(spec: PlaitModel) -> list[Need]:
    """Every permission the author of ``spec`` must hold; empty for kinds that run nothing."""
    found: list[Need] = []
    if isinstance(spec, WorkflowDefinitionSpec):
        if spec.automount_service_account_token:  # every task's default, taskRefs' included
            found.append(
                Need(
                    "spec.automountServiceAccountToken",
                    "create",
                    "pods",
                    what="the tasks' ServiceAccount tokens (mounted into every task's pod)",
                )
            )
        if spec.artifact_repository is not None:  # its credentials sign the tasks' URLs
            name = spec.artifact_repository.integration
            found.append(
                Need(
                    "spec.artifactRepository.integration",
                    "use",
                    "integrations",
                    name,
                    API_GROUP,
                    what=f"Integration {name!r} (its bucket, for the tasks' artifacts)",
                )
            )
        for i, task in enumerate(spec.tasks):
            if task.template is not None:
                found += _template_needs(task.template, f"spec.tasks[{i}].template")
            if task.http is not None:
                found.append(_http_need(task.http.integration, f"spec.tasks[{i}].http"))
        if spec.on_exit is not None and spec.on_exit.template is not None:
            found += _template_needs(spec.on_exit.template, "spec.onExit.template")
        if spec.on_exit is not None and spec.on_exit.http is not None:
            found.append(_http_need(spec.on_exit.http.integration, "spec.onExit.http"))
    elif isinstance(spec, TaskDefinitionSpec):
        found += _template_needs(spec.template, "spec.template")
    elif isinstance(spec, IntegrationSpec) and spec.secret_ref is not None:
        name = spec.secret_ref.name
        found.append(Need("spec.secretRef.name", "get", "secrets", name, what=f"Secret {name!r}"))
    return found


def subject_access_review(user: UserInfo, namespace: str, need: Need) -> dict[str, Any]:
    """The SubjectAccessReview that asks whether ``user`` holds ``need`` in ``namespace``."""
    attributes = {"namespace": namespace, "verb": need.verb, "resource": need.resource}
    if need.group:
        attributes["group"] = need.group
    if need.name:
        attributes["name"] = need.name
    spec: dict[str, Any] = {"user": user.username, "resourceAttributes": attributes}
    if user.uid:
        spec["uid"] = user.uid
    if user.groups:
        spec["groups"] = list(user.groups)
    if user.extra:
        spec["extra"] = {k: list(v) for k, v in user.extra.items()}
    return {"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview", "spec": spec}
