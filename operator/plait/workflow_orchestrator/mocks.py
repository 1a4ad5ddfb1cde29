"""What an attempt of a mocked task does: one function for both ways a WorkflowTest runs.

A WorkflowTest's case mocks tasks (:class:`plait.resources.test.Mock`). Run locally
(:mod:`plait.testing_framework.local`), the outcome ends the attempt on a simulated clock;
run in the cluster (a WorkflowInstance with ``spec.mocks``), the operator records the
attempt without a Job and ends it ``after`` seconds of real time
(:mod:`plait.workflow_orchestrator.runtime`). Both ask :func:`mock_outcome`, so a mock means
the same in both.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from plait.errors import ValidationError
from plait.kernel import expressions
from plait.resources.test import Mock
from plait.task_execution.states import FailureCause, TaskState

__all__ = ["TIMEOUT_MESSAGE", "MockError", "MockOutcome", "mock_outcome"]

#: The message of an attempt that ran past its timeoutSeconds (as its Job's deadline gives).
TIMEOUT_MESSAGE = "the task exceeded its timeoutSeconds"


class MockError(ValidationError):
    """A mock that cannot be carried out (it times out a task without a timeout, an
    output expression fails)."""


@dataclass(frozen=True)
class MockOutcome:
    """How one attempt of a mocked task ends, ``after`` seconds after it started."""

    after: float
    state: TaskState
    outputs: Mapping[str, Any] | None = None
    exit_code: int | None = None
    message: str | None = None
    cause: FailureCause | None = None


@functools.lru_cache(maxsize=4096)
def _compiled(expression: str) -> expressions.Program:
    """A mock's output expression, compiled once for all the attempts that share it."""
    return expressions.compile(expression)


def mock_outcome(
    task: str,
    mock: Mock,
    attempt: int,
    inputs: Mapping[str, Any],
    timeout: int | None,
) -> MockOutcome:
    """The end of attempt ``attempt`` of ``task`` (with its evaluated ``inputs`` and its
    ``timeout``, the task's or its TaskDefinition's timeoutSeconds). Raises
    :class:`MockError` when the mock cannot be carried out."""
    failing = (
        attempt <= mock.fail_attempts
        if mock.fail_attempts
        else (mock.exit_code != 0 or mock.timed_out)
    )
    if failing and mock.timed_out and timeout is None:
        raise MockError(f"task {task}: its mock times out, but the task has no timeoutSeconds")
    if timeout is not None and ((failing and mock.timed_out) or mock.duration_seconds > timeout):
        return MockOutcome(
            float(timeout), TaskState.TIMED_OUT, message=TIMEOUT_MESSAGE, cause=FailureCause.FAILURE
        )
    if failing:
        return MockOutcome(
            mock.duration_seconds,
            TaskState.FAILED,
            exit_code=mock.exit_code or 1,
            message=mock.message,
            cause=FailureCause.FAILURE,
        )
    outputs = dict(mock.outputs)
    activation = {"inputs": dict(inputs), "attempt": attempt}
    try:
        for key, expression in mock.output_expressions.items():
            outputs[key] = expressions.evaluate(_compiled(expression), activation)
    except ValidationError as exc:
        raise MockError(f"task {task}: mock outputExpressions: {exc}") from None
    return MockOutcome(
        mock.duration_seconds,
        TaskState.SUCCEEDED,
        outputs=outputs,
        exit_code=0,
        message=mock.message,
    )
