"""``/v1/namespaces/{namespace}/workflowtests``: WorkflowTests, their runs and case results.

Reading needs ``workflows:read`` in the namespace (a test belongs to its workflow);
starting a run needs ``tests:run`` there. Starting a run does what ``plait test run NAME``
does: it stores a Pending run of the test's newest version (``requested_by`` ``api``),
which the operator carries out; the answer (202) does not wait for it. The results are
what the operator recorded in ``test_runs`` and ``test_case_results``.
"""

from __future__ import annotations

import contextlib
import re
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from datetime import datetime
from typing import Annotated, Any

from aiohttp import web
from psycopg import AsyncConnection
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator
from pydantic.json_schema import SkipJsonSchema

from plait.api.context import (
    DATABASE,
    NAMESPACE_MAX_LENGTH,
    NAMESPACE_PATTERN,
    namespace_of,
    read_capped,
    validated,
)
from plait.api.problems import Problem
from plait.api.routing import Access, Body, Parameter, Reply, Route, problem
from plait.errors import ConfigurationError, ValidationError
from plait.event_processing.cloudevents import load_json
from plait.kernel.database import MAX_PAGE_SIZE, decode_cursor
from plait.testing_framework import repository
from plait.testing_framework.cluster import case_instance_name
from plait.testing_framework.repository import TestCaseResult, TestDefinition, TestRun

__all__ = [
    "ROUTES",
    "CaseResultOut",
    "TestRunOut",
    "WorkflowTestOut",
    "case_results",
]

COMPONENT = "testing_framework"
MAX_BODY_BYTES = 4096
#: A Kubernetes object name (DNS subdomain), as test_definitions.name is checked.
_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
_NAME_MAX_LENGTH = 253
_MAX_CURSOR_LENGTH = 256


class TestRunOut(BaseModel):
    """One run of a WorkflowTest: its status and counts (cases are in its results)."""

    __test__ = False

    id: uuid.UUID
    namespace: str
    test: str
    test_version: int = Field(serialization_alias="testVersion")
    workflow_version: int | None = Field(
        serialization_alias="workflowVersion",
        description="Version of the WorkflowDefinition the cases ran; null until it starts.",
    )
    status: str = Field(description="Pending, Running, Passed, Failed, Error or Cancelled.")
    requested_by: str = Field(
        serialization_alias="requestedBy", description="cli, definition-change or api."
    )
    total: int
    passed: int
    failed: int = Field(description="Cases that failed or could not run.")
    message: str | None
    coverage: list[str]
    created_at: datetime = Field(serialization_alias="createdAt")
    started_at: datetime | None = Field(serialization_alias="startedAt")
    finished_at: datetime | None = Field(serialization_alias="finishedAt")


class WorkflowTestOut(BaseModel):
    """A stored WorkflowTest (its newest version) and its newest run."""

    __test__ = False

    namespace: str
    name: str
    version: int
    workflow: str = Field(description="The WorkflowDefinition under test.")
    cases: int
    last_run: TestRunOut | None = Field(serialization_alias="lastRun")


class WorkflowTestList(BaseModel):
    items: list[WorkflowTestOut]


class TestRunPage(BaseModel):
    """One page of a test's runs, newest first."""

    __test__ = False

    items: list[TestRunOut]
    next_cursor: str | None = Field(
        serialization_alias="nextCursor",
        description="Pass as `cursor` for the next page; null at the end.",
    )


class Mismatch(BaseModel):
    """One expectation the case's run did not meet."""

    path: str
    expected: Any
    actual: Any


class CaseResultOut(BaseModel):
    """The verdict of one case, as the operator judged it."""

    case: str
    outcome: str = Field(description="Passed, Failed, Skipped or Error.")
    message: str | None = Field(
        description="The unmet expectations, one after another, or why the case could not run."
    )
    mismatches: list[Mismatch] = Field(description="Each expectation not met: expected, actual.")
    phase: str | None = Field(description="The phase the case's run ended in.")
    failure: str | None = Field(description="The failure of the case's run, when it failed.")
    error: str | None = Field(description="Why the case could not run (outcome Error).")
    duration_seconds: float | None = Field(serialization_alias="durationSeconds")
    workflow_instance: str | None = Field(
        serialization_alias="workflowInstance",
        description="Name of the WorkflowInstance the case ran as.",
    )


class TestRunDetail(TestRunOut):
    """A run and the result of each of its cases, in the order of the test's cases."""

    __test__ = False

    results: list[CaseResultOut]


def _cursor(value: Any) -> Any:
    if isinstance(value, str) and len(value) <= _MAX_CURSOR_LENGTH:
        try:
            decode_cursor(value)
        except ValidationError as exc:
            raise ValueError(str(exc)) from None
    return value


class TestRunQuery(BaseModel):
    """The query of ``GET .../workflowtests/{name}/runs``."""

    __test__ = False
    model_config = ConfigDict(extra="ignore")

    limit: int = Field(default=20, ge=1, le=MAX_PAGE_SIZE, description="Page size.")
    cursor: Annotated[
        Annotated[str, Field(max_length=_MAX_CURSOR_LENGTH)] | SkipJsonSchema[None],
        BeforeValidator(_cursor),
    ] = Field(default=None, description="`nextCursor` of the previous page.")

    @field_validator("cursor", mode="before")
    @classmethod
    def _empty_is_absent(cls, value: Any) -> Any:
        return None if value == "" else value


class RunRequest(BaseModel):
    """Starting a run takes no options (an empty body or ``{}``): every case of the test's
    newest version runs."""

    model_config = ConfigDict(extra="forbid")


def run_out(run: TestRun) -> TestRunOut:
    return TestRunOut(
        id=run.id,
        namespace=run.namespace,
        test=run.test_name,
        test_version=run.test_version,
        workflow_version=run.workflow_version,
        status=run.status.value,
        requested_by=run.requested_by,
        total=run.total_cases,
        passed=run.passed_cases,
        failed=run.failed_cases,
        message=run.message,
        coverage=list(run.coverage),
        created_at=run.created_at,
        started_at=run.started_at,
        finished_at=run.finished_at,
    )


def case_results(
    run: TestRun, definition: TestDefinition | None, results: Sequence[TestCaseResult]
) -> list[CaseResultOut]:
    """Each stored verdict with what its ``details`` hold, in the test's case order."""
    out = []
    for index, result in repository.in_case_order(definition, results):
        details = result.details
        duration = details.get("durationSeconds")
        out.append(
            CaseResultOut(
                case=result.case_name,
                outcome=result.outcome.value,
                message=result.message,
                mismatches=[Mismatch.model_validate(m) for m in details.get("mismatches") or ()],
                phase=details.get("phase"),
                failure=details.get("failure"),
                error=details.get("error"),
                duration_seconds=float(duration) if duration is not None else None,
                workflow_instance=case_instance_name(run.test_name, run.id, index)
                if index is not None and result.workflow_instance_id is not None
                else None,
            )
        )
    return out


def _json(
    model: BaseModel, status: int = 200, headers: Mapping[str, str] | None = None
) -> web.Response:
    return web.json_response(
        model.model_dump(mode="json", by_alias=True), status=status, headers=headers
    )


def _test_name(request: web.Request) -> str:
    name = request.match_info["name"]
    if len(name) > _NAME_MAX_LENGTH or not _NAME.match(name):
        detail = (
            f"{name[:80]!r} is not a WorkflowTest name: lower-case letters, digits, '-' and "
            f"'.', starting and ending with a letter or digit, at most {_NAME_MAX_LENGTH} "
            "characters"
        )
        raise Problem(
            400,
            "invalid-request",
            "Invalid request",
            detail,
            errors=[{"path": "name", "reason": detail}],
        )
    return name


def _run_id(request: web.Request) -> uuid.UUID:
    raw = request.match_info["id"]
    try:
        return uuid.UUID(raw)
    except ValueError:
        detail = f"test run id {raw[:80]!r} is not a UUID"
        raise Problem(
            400,
            "invalid-request",
            "Invalid request",
            detail,
            errors=[{"path": "id", "reason": detail}],
        ) from None


def _no_test(namespace: str, name: str) -> Problem:
    return Problem(
        404,
        "not-found",
        "Not found",
        f"no WorkflowTest {name!r} is stored in namespace {namespace!r}: apply it "
        "(kubectl apply -f) and wait until it is Ready",
    )


@contextlib.asynccontextmanager
async def _connection(request: web.Request) -> AsyncIterator[AsyncConnection[Any]]:
    """The testing_framework component's connection; 503 where this API has no database
    for it (``PLAIT_DATABASE_URL_TESTING_FRAMEWORK`` or the shared one)."""
    database = request.app[DATABASE]
    try:
        database.pool(COMPONENT)
    except ConfigurationError as exc:
        raise Problem(503, "not-configured", "Not configured", str(exc)) from None
    async with database.connection(COMPONENT) as conn:
        yield conn


async def list_tests(request: web.Request) -> web.Response:
    namespace = namespace_of(request)
    async with _connection(request) as conn:
        found = await repository.stored_tests(conn, [namespace])
    return _json(
        WorkflowTestList(
            items=[
                WorkflowTestOut(
                    namespace=t.definition.namespace,
                    name=t.definition.name,
                    version=t.definition.version,
                    workflow=t.definition.workflow_name,
                    cases=t.cases,
                    last_run=run_out(t.last_run) if t.last_run else None,
                )
                for t in found
            ]
        )
    )


async def list_runs(request: web.Request) -> web.Response:
    namespace, name = namespace_of(request), _test_name(request)
    query = validated(TestRunQuery, dict(request.query), pointer=False)
    async with _connection(request) as conn:
        page = await repository.runs_of_test(
            conn, namespace, name, limit=query.limit, cursor=query.cursor
        )
        if not page.items and query.cursor is None:
            stored = await repository.latest_test_definition(conn, namespace, name)
            if stored is None:
                raise _no_test(namespace, name)
    return _json(TestRunPage(items=[run_out(r) for r in page.items], next_cursor=page.next_cursor))


async def show_run(request: web.Request) -> web.Response:
    namespace, name, run_id = namespace_of(request), _test_name(request), _run_id(request)
    async with _connection(request) as conn:
        run = await repository.get_test_run(conn, run_id)
        if run is None or (run.namespace, run.test_name) != (namespace, name):
            raise Problem(
                404,
                "not-found",
                "Not found",
                f"WorkflowTest {name!r} in namespace {namespace!r} has no run {run_id}",
            )
        results = await repository.results_of(conn, run.id)
        definition = await repository.get_test_definition(conn, namespace, name, run.test_version)
    detail = TestRunDetail(
        **run_out(run).model_dump(), results=case_results(run, definition, results)
    )
    return _json(detail)


async def start_run(request: web.Request) -> web.Response:
    namespace, name = namespace_of(request), _test_name(request)
    raw = await read_capped(request, MAX_BODY_BYTES, "request body", "a fixed limit")
    if raw.strip():
        try:
            body = load_json(raw)
        except ValueError as exc:
            raise Problem(
                400,
                "invalid-request",
                "Invalid request",
                f"the body is not valid JSON: {exc}",
                errors=[{"path": "", "reason": "not valid JSON"}],
            ) from None
        if body != {}:
            fields = ", ".join(repr(k) for k in body) if isinstance(body, dict) else ""
            detail = "a run takes no options: send no body or {}" + (
                f" (unknown field {fields})" if fields else f", not a JSON {type(body).__name__}"
            )
            raise Problem(
                400,
                "invalid-request",
                "Invalid request",
                detail,
                errors=[{"path": "", "reason": detail}],
            )
    async with _connection(request) as conn:
        run = await repository.request_test_run(conn, namespace, name, requested_by="api")
    if run is None:
        raise _no_test(namespace, name)
    location = f"/v1/namespaces/{namespace}/workflowtests/{name}/runs/{run.id}"
    return _json(run_out(run), 202, {"Location": location})


_NAMESPACE = Parameter(
    "namespace",
    "path",
    {"type": "string", "pattern": NAMESPACE_PATTERN, "maxLength": NAMESPACE_MAX_LENGTH},
    "Kubernetes namespace of the WorkflowTest.",
)
_TEST_NAME = Parameter(
    "name",
    "path",
    {"type": "string", "pattern": _NAME.pattern, "maxLength": _NAME_MAX_LENGTH},
    "Name of the WorkflowTest.",
)
_RUN_ID = Parameter("id", "path", {"type": "string", "format": "uuid"}, "Id of the test run.")
_UNAVAILABLE = problem(
    "PostgreSQL cannot be reached, or this API has no database for the testing_framework "
    "component; nothing was changed.",
    {"Retry-After": "Seconds to wait before retrying (when PostgreSQL cannot be reached)."},
)
_READ = Access("workflows:read", "namespace")
_RUN = Access("tests:run", "namespace")

ROUTES: tuple[Route, ...] = (
    Route(
        "GET",
        "/v1/namespaces/{namespace}/workflowtests",
        list_tests,
        "listWorkflowTests",
        "The WorkflowTests of a namespace, each with its last run.",
        {
            200: Reply("Every stored test, by name.", (WorkflowTestList,)),
            400: problem("Invalid namespace."),
            503: _UNAVAILABLE,
        },
        parameters=(_NAMESPACE,),
        access=_READ,
    ),
    Route(
        "GET",
        "/v1/namespaces/{namespace}/workflowtests/{name}/runs",
        list_runs,
        "listWorkflowTestRuns",
        "A WorkflowTest's runs, newest first.",
        {
            200: Reply("One page.", (TestRunPage,)),
            400: problem("Invalid namespace, name, limit or cursor."),
            404: problem("No such WorkflowTest is stored in the namespace."),
            503: _UNAVAILABLE,
        },
        parameters=(_NAMESPACE, _TEST_NAME),
        query=TestRunQuery,
        access=_READ,
    ),
    Route(
        "POST",
        "/v1/namespaces/{namespace}/workflowtests/{name}/runs",
        start_run,
        "runWorkflowTest",
        "Start a run of the WorkflowTest's newest version in the cluster.",
        {
            202: Reply(
                "Requested: the run is Pending until the operator starts it.",
                (TestRunOut,),
                headers={"Location": "The run's URL (its results once it has ended)."},
            ),
            400: problem(
                "Invalid namespace or name, a body that is not JSON, or a field the request "
                "does not have."
            ),
            404: problem("No such WorkflowTest is stored in the namespace."),
            408: problem("The body did not arrive within --body-timeout."),
            413: problem(f"The body is over {MAX_BODY_BYTES} bytes."),
            503: _UNAVAILABLE,
        },
        description="Does what `plait test run NAME` does: the operator runs each case as a "
        "WorkflowInstance with its mocks and judges it on what PostgreSQL recorded (see "
        "docs/testing.md). Poll the run's URL for its status and results.",
        parameters=(_NAMESPACE, _TEST_NAME),
        body=Body({"application/json": RunRequest}, required=False),
        access=_RUN,
    ),
    Route(
        "GET",
        "/v1/namespaces/{namespace}/workflowtests/{name}/runs/{id}",
        show_run,
        "getWorkflowTestRun",
        "One run of a WorkflowTest and each case's result: expected against actual.",
        {
            200: Reply("The run and its case results.", (TestRunDetail,)),
            400: problem("Invalid namespace or name, or the id is not a UUID."),
            404: problem("The WorkflowTest has no such run."),
            503: _UNAVAILABLE,
        },
        parameters=(_NAMESPACE, _TEST_NAME, _RUN_ID),
        access=_READ,
    ),
)
