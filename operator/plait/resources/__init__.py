"""Plait's custom resources: typed models of every kind, their CRDs, and their validation.

The models are the one source of truth: the operator parses what Kopf hands it with them,
and ``plait crds`` generates the CustomResourceDefinitions from them.
"""

from plait.resources.common import (
    Backoff,
    Condition,
    ContainerTemplate,
    EnvVar,
    IntegrationReference,
    KindInfo,
    LocalObjectReference,
    Parameter,
    PlaitModel,
    ResourceRequirements,
    RetryPolicy,
    SecretKeySelector,
    SecretReference,
    SecurityContext,
    Status,
    Toleration,
)
from plait.resources.event import EVENT_DEFINITION, EventDefinitionSpec, EventDefinitionStatus
from plait.resources.integration import INTEGRATION, IntegrationSpec, IntegrationStatus
from plait.resources.task import (
    TASK_DEFINITION,
    OutputDeclaration,
    TaskDefinitionSpec,
    TaskDefinitionStatus,
)
from plait.resources.test import WORKFLOW_TEST, WorkflowTestSpec, WorkflowTestStatus
from plait.resources.trigger import (
    EVENT_TRIGGER,
    EventTriggerSpec,
    EventTriggerStatus,
    RateLimit,
    Schedule,
)
from plait.resources.workflow import (
    WORKFLOW_DEFINITION,
    WORKFLOW_INSTANCE,
    Failure,
    Task,
    TaskCounts,
    WaitForEvent,
    WorkflowDefinitionSpec,
    WorkflowDefinitionStatus,
    WorkflowInstanceSpec,
    WorkflowInstanceStatus,
    WorkflowReference,
)

#: Every kind Plait defines, in the order the CRDs and the reference documentation list them.
KINDS: tuple[KindInfo, ...] = (
    WORKFLOW_DEFINITION,
    WORKFLOW_INSTANCE,
    TASK_DEFINITION,
    EVENT_TRIGGER,
    INTEGRATION,
    EVENT_DEFINITION,
    WORKFLOW_TEST,
)

#: Kind name -> its descriptor.
KINDS_BY_NAME: dict[str, KindInfo] = {k.kind: k for k in KINDS}

__all__ = [
    "EVENT_DEFINITION",
    "EVENT_TRIGGER",
    "INTEGRATION",
    "KINDS",
    "KINDS_BY_NAME",
    "TASK_DEFINITION",
    "WORKFLOW_DEFINITION",
    "WORKFLOW_INSTANCE",
    "WORKFLOW_TEST",
    "Backoff",
    "Condition",
    "ContainerTemplate",
    "EnvVar",
    "EventDefinitionSpec",
    "EventDefinitionStatus",
    "EventTriggerSpec",
    "EventTriggerStatus",
    "Failure",
    "IntegrationReference",
    "IntegrationSpec",
    "IntegrationStatus",
    "KindInfo",
    "LocalObjectReference",
    "OutputDeclaration",
    "Parameter",
    "PlaitModel",
    "RateLimit",
    "ResourceRequirements",
    "RetryPolicy",
    "Schedule",
    "SecretKeySelector",
    "SecretReference",
    "SecurityContext",
    "Status",
    "Task",
    "TaskCounts",
    "TaskDefinitionSpec",
    "TaskDefinitionStatus",
    "Toleration",
    "WaitForEvent",
    "WorkflowDefinitionSpec",
    "WorkflowDefinitionStatus",
    "WorkflowInstanceSpec",
    "WorkflowInstanceStatus",
    "WorkflowReference",
    "WorkflowTestSpec",
    "WorkflowTestStatus",
]
