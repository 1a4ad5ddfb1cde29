"""The dashboard's WorkflowTest pages: the tests of the namespaces the caller may read,
one test's runs with each case's result, and the Run button.

Reading needs ``workflows:read`` (a test belongs to its workflow), running ``tests:run``
in the test's namespace, as on the API's routes. A run started here is the run
``plait test run NAME`` requests (``requested_by`` ``api``): the operator carries it out,
and the test's page reloads itself every few seconds until the run has ended.
"""

from __future__ import annotations

import json
import urllib.parse
import uuid
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from psycopg import AsyncConnection

from plait.auth.permissions import ANY_NAMESPACE
from plait.errors import NotFoundError, ValidationError
from plait.kernel.database import Database, decode_cursor
from plait.testing_framework import repository
from plait.testing_framework.cluster import case_instance_name
from plait.testing_framework.repository import TestCaseResult, TestRun
from plait.testing_framework.states import TestRunStatus
from plait.web_application.pages import (
    DASHBOARD_DATABASE,
    PREFIX,
    VIEWER,
    Forbidden,
    PageRoute,
    redirect,
    render,
)

__all__ = ["PAGES", "REFRESH_SECONDS"]

COMPONENT = "testing_framework"
#: Runs of a test shown a page.
RUNS_PER_PAGE = 20
#: How often a test's page reloads itself while the run it shows has not ended.
REFRESH_SECONDS = 3


@dataclass(frozen=True)
class CaseRow:
    """One case's result as the page shows it: values as JSON text, escaped on output."""

    result: TestCaseResult
    mismatches: list[tuple[str, str, str]]
    instance: str | None


def _json_text(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def _case_rows(run: TestRun, definition: Any, results: list[TestCaseResult]) -> list[CaseRow]:
    rows = []
    for index, result in repository.in_case_order(definition, results):
        mismatches = [
            (str(m.get("path", "")), _json_text(m.get("expected")), _json_text(m.get("actual")))
            for m in result.details.get("mismatches") or ()
        ]
        instance = (
            case_instance_name(run.test_name, run.id, index)
            if index is not None and result.workflow_instance_id is not None
            else None
        )
        rows.append(CaseRow(result, mismatches, instance))
    return rows


def _database(request: web.Request) -> Database:
    """The dashboard's database, refusing (503 page) when it has none for the tests."""
    database = request.app[DASHBOARD_DATABASE]
    database.pool(COMPONENT)  # ConfigurationError: the page says what to set
    return database


async def _namespaces(request: web.Request, conn: AsyncConnection[Any]) -> list[str]:
    """The namespaces with tests the caller may read (``workflows:read``)."""
    principal = request[VIEWER].principal
    if principal.allows("workflows:read", None):
        cur = await conn.execute(
            "SELECT DISTINCT namespace FROM testing_framework_service.test_definitions "
            "WHERE deleted_at IS NULL ORDER BY 1"
        )
        return [row[0] for row in await cur.fetchall()]
    return [ns for ns in sorted(principal.by_namespace) if principal.allows("workflows:read", ns)]


async def workflow_tests_page(request: web.Request) -> web.Response:
    viewer = request[VIEWER]
    only = request.query.get("namespace") or None
    async with _database(request).connection(COMPONENT) as conn:
        namespaces = await _namespaces(request, conn)
        if only is not None and not viewer.may("workflows:read", only):
            raise Forbidden(
                f"{viewer.principal.name} lacks the permission workflows:read in namespace "
                f"{only[:63]!r}"
            )
        found = await repository.stored_tests(conn, [only] if only else namespaces)
    return render(
        request,
        "tests.html",
        tests=found,
        namespaces=namespaces,
        namespace=only,
    )


def _run_choice(raw: str | None) -> uuid.UUID | None:
    if not raw:
        return None
    try:
        return uuid.UUID(raw)
    except ValueError:
        raise ValidationError(f"run must be the id of a test run, not {raw[:40]!r}") from None


async def workflow_test_page(request: web.Request) -> web.Response:
    namespace, name = request.match_info["namespace"], request.match_info["name"]
    after = request.query.get("after") or None
    if after is not None:
        decode_cursor(after)  # a ValidationError (400 page) for a cursor not made here
    chosen = _run_choice(request.query.get("run"))
    async with _database(request).connection(COMPONENT) as conn:
        latest = await repository.latest_test_definition(conn, namespace, name)
        page = await repository.runs_of_test(
            conn, namespace, name, limit=RUNS_PER_PAGE, cursor=after
        )
        if latest is None and not page.items and after is None:
            raise NotFoundError(f"no WorkflowTest {name[:253]!r} in namespace {namespace[:63]!r}")
        shown: TestRun | None = None
        if chosen is not None:
            shown = await repository.get_test_run(conn, chosen)
            if shown is None or (shown.namespace, shown.test_name) != (namespace, name):
                raise NotFoundError(f"{name[:253]} has no run {chosen}")
        elif page.items and after is None:
            shown = page.items[0]
        cases: list[CaseRow] = []
        if shown is not None:
            results = await repository.results_of(conn, shown.id)
            ran = await repository.get_test_definition(conn, namespace, name, shown.test_version)
            cases = _case_rows(shown, ran, results)
    viewer = request[VIEWER]
    unfinished = shown is not None and shown.status in (
        TestRunStatus.PENDING,
        TestRunStatus.RUNNING,
    )
    next_url = None
    if page.next_cursor:
        next_url = f"{PREFIX}/tests/{namespace}/{name}?" + urllib.parse.urlencode(
            {"after": page.next_cursor}
        )
    return render(
        request,
        "test.html",
        namespace=namespace,
        name=name,
        latest=latest,
        runs=page.items,
        shown=shown,
        cases=cases,
        may_run=latest is not None and viewer.may("tests:run", namespace),
        may_open_runs=viewer.may("instances:read", namespace),
        notice=request.query.get("notice"),
        # The reload shows the run without the notice that came with the request.
        refresh=f"{REFRESH_SECONDS}; url={PREFIX}/tests/{namespace}/{name}?run={shown.id}"
        if unfinished and shown is not None
        else None,
        next_url=next_url,
    )


async def run_test(request: web.Request) -> web.StreamResponse:
    """Request a run of the test's newest version, as ``plait test run NAME`` does."""
    namespace, name = request.match_info["namespace"], request.match_info["name"]
    async with _database(request).connection(COMPONENT) as conn:
        run = await repository.request_test_run(conn, namespace, name, requested_by="api")
    if run is None:
        raise NotFoundError(
            f"no WorkflowTest {name[:253]!r} is stored in namespace {namespace[:63]!r}: "
            "apply it and wait until it is Ready"
        )
    query = urllib.parse.urlencode(
        {
            "run": str(run.id),
            "notice": f"run requested: the operator runs the cases of v{run.test_version}",
        }
    )
    return redirect(f"{PREFIX}/tests/{namespace}/{name}?{query}")


PAGES: tuple[PageRoute, ...] = (
    PageRoute(
        "GET",
        f"{PREFIX}/tests",
        workflow_tests_page,
        "tests",
        "WorkflowTests and their last runs.",
        "workflows:read",
        ANY_NAMESPACE,
    ),
    PageRoute(
        "GET",
        f"{PREFIX}/tests/{{namespace}}/{{name}}",
        workflow_test_page,
        "test",
        "One WorkflowTest: its runs and each case's result.",
        "workflows:read",
        "namespace",
    ),
    PageRoute(
        "POST",
        f"{PREFIX}/tests/{{namespace}}/{{name}}/run",
        run_test,
        "test-run",
        "Start a run of a WorkflowTest.",
        "tests:run",
        "namespace",
    ),
)
