"""Types shared by Plait's kinds, and the descriptor every kind is registered with.

Field names are snake_case in Python and camelCase on the wire (the alias), so a ``spec``
dict exactly as Kopf hands it over parses with ``Model.model_validate(spec)``. Attribute
docstrings are the field descriptions: the CRDs and ``docs/resources.md`` are generated
from them, so the text a user reads in ``kubectl explain`` is the text written here.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Annotated, Any, ClassVar, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, JsonValue, StringConstraints, model_validator
from pydantic.alias_generators import to_camel

#: A JSON object as pydantic's json_schema_extra expects it.
JsonDict = dict[str, JsonValue]

__all__ = [
    "DEFAULT_ARTIFACT_MAX_BYTES",
    "DNS_LABEL",
    "IDENTIFIER",
    "MAX_ARTIFACT_BYTES",
    "MAX_EXPRESSION",
    "MAX_MAP_ENTRIES",
    "Backoff",
    "Capabilities",
    "CelExpression",
    "Condition",
    "ContainerTemplate",
    "DnsLabel",
    "EnvVar",
    "Identifier",
    "IntegrationReference",
    "KindInfo",
    "LocalObjectReference",
    "NodeSelector",
    "OutputArtifact",
    "Parameter",
    "ParameterType",
    "PlaitModel",
    "PrinterColumn",
    "Quantity",
    "ResourceRequirements",
    "RetryPolicy",
    "SeccompProfile",
    "SecretKeySelector",
    "SecretReference",
    "SecurityContext",
    "Status",
    "Toleration",
    "Tolerations",
    "artifact_path_problem",
    "cel_rule",
]

#: A DNS-1123 label: the names of tasks and of the objects Plait refers to.
DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
#: A C identifier: parameter, input and output names, usable as ``params.name`` in CEL.
IDENTIFIER = r"^[A-Za-z_][A-Za-z0-9_]*$"
#: Longest CEL expression accepted; long enough for real logic, short enough for CEL cost.
MAX_EXPRESSION = 4096
#: Most entries of any name -> value map (inputs, outputs, arguments, env).
MAX_MAP_ENTRIES = 128

DnsLabel = Annotated[str, StringConstraints(min_length=1, max_length=63, pattern=DNS_LABEL)]
ObjectName = Annotated[str, StringConstraints(min_length=1, max_length=253)]
Identifier = Annotated[str, StringConstraints(min_length=1, max_length=63, pattern=IDENTIFIER)]
CelExpression = Annotated[str, StringConstraints(min_length=1, max_length=MAX_EXPRESSION)]
Quantity = Annotated[
    int | str,
    Field(json_schema_extra={"x-kubernetes-int-or-string": True}),
]
ResourceName = Literal["cpu", "memory", "ephemeral-storage"]


def cel_rule(rule: str, message: str, field_path: str | None = None) -> JsonDict:
    """One ``x-kubernetes-validations`` entry, written next to the model it guards."""
    entry: JsonDict = {"rule": rule, "message": message}
    if field_path is not None:
        entry["fieldPath"] = field_path
    return entry


class PlaitModel(BaseModel):
    """Base of every spec and status model: camelCase aliases, unknown fields refused."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        use_attribute_docstrings=True,
        validate_default=False,
    )

    def to_dict(self) -> dict[str, Any]:
        """The wire form: camelCase keys, unset optional fields omitted."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


class Condition(PlaitModel):
    """The latest observation of one aspect of an object's state (Kubernetes conventions)."""

    type: Annotated[str, StringConstraints(min_length=1, max_length=316)]
    """Type of condition in CamelCase, e.g. Ready."""
    status: Literal["True", "False", "Unknown"]
    """Whether the condition holds: True, False or Unknown."""
    reason: Annotated[str, StringConstraints(min_length=1, max_length=1024)]
    """Machine-readable CamelCase reason for the condition's last transition."""
    message: Annotated[str, StringConstraints(max_length=32768)] = ""
    """Human-readable details about the last transition."""
    last_transition_time: dt.datetime
    """When the condition last changed from one status to another."""
    observed_generation: Annotated[int, Field(ge=0)] | None = None
    """The .metadata.generation the condition was set from."""


Conditions = Annotated[
    list[Condition],
    Field(
        max_length=16,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    ),
]


class Status(PlaitModel):
    """Fields every Plait status carries."""

    observed_generation: Annotated[int, Field(ge=0)] | None = None
    """The .metadata.generation this status describes."""
    conditions: Conditions = Field(default_factory=list)
    """Current conditions of the object; Ready summarises them."""


class LocalObjectReference(PlaitModel):
    """A reference to an object of a known kind in the same namespace."""

    name: ObjectName
    """Name of the referenced object."""


class IntegrationReference(PlaitModel):
    """An Integration in the same namespace whose settings and credentials a task receives."""

    name: ObjectName
    """Name of the Integration."""


#: A key of a Secret (the characters Kubernetes allows in Secret keys).
SecretKey = Annotated[
    str, StringConstraints(min_length=1, max_length=253, pattern=r"^[-._a-zA-Z0-9]+$")
]


class SecretReference(PlaitModel):
    """A Secret in the same namespace; Plait stores only this reference, never the values."""

    name: ObjectName
    """Name of the Secret."""
    keys: Annotated[dict[SecretKey, SecretKey], Field(max_length=16)] | None = None
    """Secret key of the catalog type -> the key holding it in this Secret, for keys named
    differently there; every other secret key of the type is read from the key of the same
    name. Keys the type does not declare are refused."""


class SecretKeySelector(PlaitModel):
    """One key of a Secret in the same namespace."""

    name: ObjectName
    """Name of the Secret."""
    key: Annotated[str, StringConstraints(min_length=1, max_length=253)]
    """Key within the Secret."""


class EnvVar(PlaitModel):
    """An environment variable of a task's container: a literal value or a Secret key."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel_rule(
                    "!(has(self.value) && has(self.secretKeyRef))",
                    "value and secretKeyRef are mutually exclusive",
                )
            ]
        }
    )

    name: Annotated[
        str,
        StringConstraints(min_length=1, max_length=256, pattern=r"^[-._a-zA-Z][-._a-zA-Z0-9]*$"),
    ]
    """Name of the variable."""
    value: Annotated[str, StringConstraints(max_length=32768)] | None = None
    """Literal value."""
    secret_key_ref: SecretKeySelector | None = None
    """Take the value from a Secret key instead."""

    @model_validator(mode="after")
    def _one_source(self) -> Self:
        if self.value is not None and self.secret_key_ref is not None:
            raise ValueError("value and secretKeyRef are mutually exclusive")
        return self


class ResourceRequirements(PlaitModel):
    """Compute resources of a task's container, as in a Pod spec."""

    requests: Annotated[dict[ResourceName, Quantity], Field(max_length=3)] | None = None
    """Minimum resources (cpu, memory, ephemeral-storage) the scheduler reserves."""
    limits: Annotated[dict[ResourceName, Quantity], Field(max_length=3)] | None = None
    """Maximum resources the container may use."""


class PodMetadata(PlaitModel):
    """Extra metadata for the Pods of a task (service-mesh or scheduling hints, say)."""

    labels: Annotated[
        dict[
            Annotated[str, StringConstraints(max_length=317)],
            Annotated[str, StringConstraints(max_length=63)],
        ],
        Field(max_length=32),
    ] = Field(default_factory=dict)
    """Labels of the Pods."""
    annotations: Annotated[
        dict[
            Annotated[str, StringConstraints(max_length=317)],
            Annotated[str, StringConstraints(max_length=4096)],
        ],
        Field(max_length=32),
    ] = Field(default_factory=dict)
    """Annotations of the Pods."""


class Capabilities(PlaitModel):
    """Linux capabilities of a task's container, added to or dropped from the runtime's set."""

    add: (
        Annotated[
            list[Annotated[str, StringConstraints(max_length=64, pattern=r"^[A-Z][A-Z_]*$")]],
            Field(max_length=41),
        ]
        | None
    ) = None
    """Capabilities to add, e.g. NET_BIND_SERVICE (the only one the restricted Pod Security
    level allows)."""
    drop: (
        Annotated[
            list[Annotated[str, StringConstraints(max_length=64, pattern=r"^[A-Z][A-Z_]*$")]],
            Field(max_length=41),
        ]
        | None
    ) = None
    """Capabilities to drop; ALL when unset."""


_LOCALHOST_PROFILE = cel_rule(
    "self.type == 'Localhost' ? has(self.localhostProfile) : !has(self.localhostProfile)",
    "localhostProfile is required with type Localhost and only allowed with it",
)


class SeccompProfile(PlaitModel):
    """The seccomp filter of a task's Pod."""

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": [_LOCALHOST_PROFILE]})

    type: Literal["RuntimeDefault", "Localhost", "Unconfined"]
    """RuntimeDefault (the container runtime's profile), Localhost (a profile file on the
    node) or Unconfined (no filter; refused by the restricted Pod Security level)."""
    localhost_profile: Annotated[str, StringConstraints(min_length=1, max_length=4096)] | None = (
        None
    )
    """With type Localhost: the profile's path relative to the kubelet's seccomp folder."""

    @model_validator(mode="after")
    def _localhost(self) -> Self:
        if (self.type == "Localhost") != (self.localhost_profile is not None):
            raise ValueError(str(_LOCALHOST_PROFILE["message"]))
        return self


UserId = Annotated[int, Field(ge=0, le=2147483647)]

_PRIVILEGED_ESCALATES = cel_rule(
    "!(has(self.privileged) && self.privileged"
    " && has(self.allowPrivilegeEscalation) && !self.allowPrivilegeEscalation)",
    "a privileged container always allows privilege escalation",
)
_ROOT_IS_NOT_NON_ROOT = cel_rule(
    "!(has(self.runAsUser) && self.runAsUser == 0 && has(self.runAsNonRoot) && self.runAsNonRoot)",
    "runAsUser 0 is root: it contradicts runAsNonRoot true",
)


class SecurityContext(PlaitModel):
    """How a task's Pod and container run. Every field left unset keeps Plait's
    restricted-compliant default: runAsNonRoot true, runAsUser 65532 (unless runAsNonRoot
    is false), allowPrivilegeEscalation false, capabilities drop ALL, seccompProfile
    RuntimeDefault."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [_PRIVILEGED_ESCALATES, _ROOT_IS_NOT_NON_ROOT]
        }
    )

    run_as_user: UserId | None = None
    """User id the container runs as; 65532 when unset (unless runAsNonRoot is false: then
    the image's USER)."""
    run_as_group: UserId | None = None
    """Primary group id of the container's processes; the image's when unset."""
    run_as_non_root: bool | None = None
    """Refuse to start the container as root (uid 0); true unless runAsUser is 0."""
    fs_group: UserId | None = None
    """Group that owns the Pod's volumes (integration credential files included)."""
    read_only_root_filesystem: bool | None = None
    """Mount the container's root filesystem read-only."""
    allow_privilege_escalation: bool | None = None
    """Let a process gain more privileges than its parent (setuid binaries); false unless
    privileged is true."""
    privileged: bool | None = None
    """Run the container privileged (refused by the baseline and restricted Pod Security
    levels)."""
    capabilities: Capabilities | None = None
    """Linux capabilities to add and drop; every one is dropped when unset."""
    seccomp_profile: SeccompProfile | None = None
    """Seccomp filter; RuntimeDefault when unset."""

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.privileged and self.allow_privilege_escalation is False:
            raise ValueError(str(_PRIVILEGED_ESCALATES["message"]))
        if self.run_as_user == 0 and self.run_as_non_root:
            raise ValueError(str(_ROOT_IS_NOT_NON_ROOT["message"]))
        return self

    def over(self, defaults: SecurityContext | None) -> SecurityContext:
        """This context with the fields it leaves unset taken from ``defaults``; an
        inherited field that contradicts one set here is left out (a task's runAsUser 0
        beats a workflow's runAsNonRoot true, its privileged true a workflow's
        allowPrivilegeEscalation false, and the other way round)."""
        if defaults is None:
            return self
        own = self.model_dump(exclude_none=True)
        merged = {**defaults.model_dump(exclude_none=True), **own}
        contradictions = (
            merged.get("privileged") is True and merged.get("allow_privilege_escalation") is False,
            merged.get("run_as_user") == 0 and merged.get("run_as_non_root") is True,
        )
        pairs = (("privileged", "allow_privilege_escalation"), ("run_as_user", "run_as_non_root"))
        for contradicts, pair in zip(contradictions, pairs, strict=True):
            if contradicts:
                for name in pair:
                    if name not in own:
                        del merged[name]
        return SecurityContext.model_validate(merged)


_OPERATOR_EXISTS = cel_rule(
    "!has(self.operator) || self.operator != 'Exists' || !has(self.value)",
    "a toleration with operator Exists has no value",
)
_SECONDS_NO_EXECUTE = cel_rule(
    "!has(self.tolerationSeconds) || (has(self.effect) && self.effect == 'NoExecute')",
    "tolerationSeconds is only allowed with effect NoExecute",
)


class Toleration(PlaitModel):
    """A taint of a node that a task's Pod tolerates, as in a Pod spec."""

    model_config = ConfigDict(
        json_schema_extra={"x-kubernetes-validations": [_OPERATOR_EXISTS, _SECONDS_NO_EXECUTE]}
    )

    key: Annotated[str, StringConstraints(max_length=317)] | None = None
    """Taint key; with operator Exists and no key, every taint is tolerated."""
    operator: Literal["Equal", "Exists"] | None = None
    """Equal (the taint's value must be value) or Exists (any value); Equal when unset."""
    value: Annotated[str, StringConstraints(max_length=63)] | None = None
    """Taint value matched with operator Equal."""
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    """Taint effect matched; every effect when unset."""
    toleration_seconds: Annotated[int, Field(ge=0, le=31536000)] | None = None
    """With effect NoExecute: how long the Pod stays bound after the taint appears."""

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.operator == "Exists" and self.value is not None:
            raise ValueError(str(_OPERATOR_EXISTS["message"]))
        if self.toleration_seconds is not None and self.effect != "NoExecute":
            raise ValueError(str(_SECONDS_NO_EXECUTE["message"]))
        return self


NodeSelector = Annotated[
    dict[
        Annotated[str, StringConstraints(max_length=317)],
        Annotated[str, StringConstraints(max_length=63)],
    ],
    Field(max_length=32),
]
Tolerations = Annotated[list[Toleration], Field(max_length=32)]


#: An artifact's size limit when its ``maxBytes`` is unset, and the most ``maxBytes`` may
#: be (what one S3 PUT can carry); an attempt's output artifacts together get the most too.
DEFAULT_ARTIFACT_MAX_BYTES = 1 << 30
MAX_ARTIFACT_BYTES = 5 << 30
ArtifactPath = Annotated[
    str, StringConstraints(min_length=2, max_length=4096, pattern=r"^/.*[^/]$")
]


def artifact_path_problem(path: str) -> str | None:
    """Why ``path`` cannot hold an artifact: Plait's own folder, the termination message,
    ``.`` or ``..`` (checked by the models, which admission and the reconciler apply: as a
    CEL rule in the CRD, a path check costs more than the API server allows per object)."""
    if path == "/var/run/plait" or path.startswith("/var/run/plait/"):
        return "path must not be in /var/run/plait or be /dev/termination-log (Plait's own)"
    if path == "/dev/termination-log":
        return "path must not be in /var/run/plait or be /dev/termination-log (Plait's own)"
    if any(part in (".", "..") for part in path.split("/")):
        return "path must not contain . or .."
    return None


class OutputArtifact(PlaitModel):
    """A file the task writes that is stored when its command succeeds (any size up to its
    limit, unlike outputs, which share the 4 KiB termination message)."""

    name: Identifier
    """Name of the artifact; downstream tasks read it as tasks.<task>.artifacts.<name>."""
    path: ArtifactPath
    """Absolute path of the file in the task's container."""
    max_bytes: Annotated[int, Field(ge=0, le=MAX_ARTIFACT_BYTES)] | None = None
    """Largest size accepted, in bytes; 1 GiB when unset, 5 GiB at most. A larger file fails
    the attempt before anything is uploaded."""

    @model_validator(mode="after")
    def _path(self) -> Self:
        problem = artifact_path_problem(self.path)
        if problem:
            raise ValueError(problem)
        return self


_ARTIFACTS_NEED_COMMAND = cel_rule(
    "!has(self.outputArtifacts) || size(self.outputArtifacts) == 0 || has(self.command)",
    "outputArtifacts need an explicit command: Plait runs it, then uploads the files",
    ".command",
)


class ContainerTemplate(PlaitModel):
    """The container a task runs: one Job per attempt is created from it."""

    model_config = ConfigDict(
        json_schema_extra={"x-kubernetes-validations": [_ARTIFACTS_NEED_COMMAND]}
    )

    image: Annotated[str, StringConstraints(min_length=1, max_length=1024)]
    """Container image reference."""
    command: (
        Annotated[list[Annotated[str, StringConstraints(max_length=4096)]], Field(max_length=64)]
        | None
    ) = None
    """Entrypoint; the image's ENTRYPOINT when unset."""
    args: (
        Annotated[list[Annotated[str, StringConstraints(max_length=4096)]], Field(max_length=256)]
        | None
    ) = None
    """Arguments to the entrypoint; the image's CMD when unset."""
    working_dir: Annotated[str, StringConstraints(max_length=4096)] | None = None
    """Working directory of the container."""
    env: (
        Annotated[
            list[EnvVar],
            Field(
                max_length=MAX_MAP_ENTRIES,
                json_schema_extra={
                    "x-kubernetes-list-type": "map",
                    "x-kubernetes-list-map-keys": ["name"],
                },
            ),
        ]
        | None
    ) = None
    """Environment variables; task inputs are added as PLAIT_INPUT_<NAME>."""
    resources: ResourceRequirements | None = None
    """CPU, memory and ephemeral-storage requests and limits."""
    integrations: (
        Annotated[
            list[IntegrationReference],
            Field(
                max_length=16,
                json_schema_extra={
                    "x-kubernetes-list-type": "map",
                    "x-kubernetes-list-map-keys": ["name"],
                },
            ),
        ]
        | None
    ) = None
    """Integrations whose settings and credentials are made available to the container:
    settings as PLAIT_INTEGRATION_<NAME>_<SETTING> variables, secret keys as files under
    /var/run/plait/integrations/<name>/."""
    service_account_name: DnsLabel | None = None
    """Service account the task's Pod runs as; the namespace's default when unset."""
    automount_service_account_token: bool | None = None
    """Mount the service account's API token into the Pod; false when unset, so a task
    reaches the Kubernetes API only when it asks to."""
    security_context: SecurityContext | None = None
    """How the Pod and container run (user, privileges, capabilities, seccomp); unset fields
    take the workflow's securityContext, then Plait's restricted-compliant defaults."""
    node_selector: NodeSelector | None = None
    """Labels a node must carry to run the task's Pod; the workflow's nodeSelector when
    unset."""
    tolerations: Tolerations | None = None
    """Taints of nodes the task's Pod tolerates; the workflow's tolerations when unset."""
    pod_metadata: PodMetadata | None = None
    """Labels and annotations added to the task's Pods (Plait's own take precedence)."""
    output_artifacts: (
        Annotated[
            list[OutputArtifact],
            Field(
                max_length=16,
                json_schema_extra={
                    "x-kubernetes-list-type": "map",
                    "x-kubernetes-list-map-keys": ["name"],
                },
            ),
        ]
        | None
    ) = None
    """Files stored in the workflow's artifactRepository when the command exits 0, for
    downstream tasks' inputArtifacts; needs command to be set."""

    @model_validator(mode="after")
    def _artifacts_need_command(self) -> Self:
        if self.output_artifacts and not self.command:
            raise ValueError(str(_ARTIFACTS_NEED_COMMAND["message"]))
        names = [a.name for a in self.output_artifacts or ()]
        if len(set(names)) != len(names):
            raise ValueError("outputArtifacts: each name at most once")
        return self


class Backoff(PlaitModel):
    """Delay between attempts: initial * factor^(attempt-1), capped at max."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel_rule(
                    "!has(self.maxSeconds) || !has(self.initialSeconds)"
                    " || self.maxSeconds >= self.initialSeconds",
                    "maxSeconds must be at least initialSeconds",
                )
            ]
        }
    )

    initial_seconds: Annotated[int, Field(ge=0, le=86400)] = 10
    """Delay before the second attempt, in seconds."""
    factor: Annotated[int, Field(ge=1, le=10)] = 2
    """Multiplier applied to the delay after each attempt."""
    max_seconds: Annotated[int, Field(ge=0, le=86400)] = 3600
    """Upper bound of the delay, in seconds."""

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if self.max_seconds < self.initial_seconds:
            raise ValueError("maxSeconds must be at least initialSeconds")
        return self


class RetryPolicy(PlaitModel):
    """How often a failed task is tried again, and how long Plait waits in between."""

    limit: Annotated[int, Field(ge=0, le=100)] = 0
    """Attempts after the first one; 0 means no retry."""
    retry_on: Literal["Always", "OnFailure", "OnError"] = "OnFailure"
    """Which failures are retried: OnFailure (the task's own: a non-zero exit or its
    timeout), OnError (around the task: its Pod refused or evicted, its container unable
    to start, its Job unbuildable), Always (both). A task that cannot start because an
    input or when cannot be evaluated is never retried. An image that cannot be pulled
    keeps the Pod waiting until the attempt's timeout, a failure."""
    backoff: Backoff | None = None
    """Delay between attempts; 10s doubling up to an hour when unset."""


ParameterType = Literal["string", "integer", "number", "boolean", "object", "array"]


class Parameter(PlaitModel):
    """A named, typed value a workflow or task definition is given when it runs."""

    name: Identifier
    """Name of the parameter; read in CEL as params.<name>."""
    type: ParameterType = "string"
    """JSON type of the value."""
    description: Annotated[str, StringConstraints(max_length=1024)] | None = None
    """What the parameter means."""
    default: Annotated[
        Any, Field(json_schema_extra={"x-kubernetes-preserve-unknown-fields": True})
    ] = None
    """Value used when none is given; a parameter without a default is required."""
    enum: (
        Annotated[list[Annotated[str, StringConstraints(max_length=256)]], Field(max_length=64)]
        | None
    ) = None
    """For string parameters: the allowed values."""


Parameters = Annotated[
    list[Parameter],
    Field(
        max_length=MAX_MAP_ENTRIES,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    ),
]


@dataclass(frozen=True)
class PrinterColumn:
    """One ``additionalPrinterColumns`` entry of a CRD."""

    name: str
    json_path: str
    type: Literal["string", "integer", "number", "boolean", "date"] = "string"
    description: str = ""
    priority: int = 0


@dataclass(frozen=True)
class KindInfo:
    """Everything the CRD generator needs to know about one kind besides its models."""

    kind: str
    plural: str
    short_names: tuple[str, ...]
    spec: type[PlaitModel]
    status: type[PlaitModel]
    description: str
    printer_columns: tuple[PrinterColumn, ...] = ()
    root_validations: tuple[JsonDict, ...] = ()
    categories: tuple[str, ...] = ("plait",)
    singular: str = field(default="")

    SCOPE: ClassVar[str] = "Namespaced"

    @property
    def singular_name(self) -> str:
        """Lower-case kind, as Kubernetes expects for the singular name."""
        return self.singular or self.kind.lower()


READY_COLUMN = PrinterColumn(
    "Ready", '.status.conditions[?(@.type=="Ready")].status', description="Ready condition"
)
AGE_COLUMN = PrinterColumn("Age", ".metadata.creationTimestamp", "date")
