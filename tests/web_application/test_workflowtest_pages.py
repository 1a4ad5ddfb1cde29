"""The dashboard's WorkflowTest pages in-process (real PostgreSQL, no cluster): the list,
a test's runs and case results (escaped), the tests on a definition's page, and the Run
button, shown and accepted only for ``tests:run`` with the session's CSRF token.

Only the read path and the request are checked here, so the results are written with the
functions the operator records them with; tests/api/test_workflowtests.py and the browser
test read the results of runs the operator carried out."""

from __future__ import annotations

import re
import uuid
from typing import Any

import psycopg
from aiohttp.test_utils import TestClient

from plait.testing_framework import repository
from plait.testing_framework.states import CaseOutcome
from plait.workflow_orchestrator import repository as orchestrator
from tests.web_application import test_pages
from tests.web_application.test_pages import SPEC, _sign_in

# The signed-in client of the other page tests (users ada, editor, and vic, viewer).
database = test_pages.database
client = test_pages.client

HOSTILE = "<script>alert(1)</script>"
CASES = {
    "cases": [
        {"name": "passes", "expect": {"phase": "Succeeded"}},
        {"name": "fails", "expect": {"phase": "Succeeded"}},
    ]
}


async def _tested(dsn: str) -> uuid.UUID:
    """Test ``smoke`` of workflow ``shop`` in ``shop``, with one finished run whose
    second case failed with a hostile message."""
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        await orchestrator.upsert_workflow_definition(conn, "shop", "shop", SPEC)
        await repository.upsert_test_definition(
            conn, "shop", "smoke", workflow_name="shop", spec=CASES
        )
        run = await repository.request_test_run(conn, "shop", "smoke", requested_by="cli")
        assert run is not None
        await repository.begin_test_run(conn, run.id, workflow_version=1, total_cases=2)
        await repository.record_case(
            conn,
            run.id,
            "passes",
            CaseOutcome.PASSED,
            details={"mismatches": [], "phase": "Succeeded"},
        )
        await repository.record_case(
            conn,
            run.id,
            "fails",
            CaseOutcome.FAILED,
            message='phase: expected "Succeeded", got "Failed"',
            details={
                "mismatches": [{"path": "phase", "expected": "Succeeded", "actual": "Failed"}],
                "phase": "Failed",
                "failure": f"task a attempt 1 failed with exit code 1: {HOSTILE}",
            },
        )
        await repository.finish_test_run(conn, run.id, message="cases not passed: fails")
    return run.id


async def test_a_viewer_reads_the_results_escaped_and_may_not_run_a_test(
    client: TestClient[Any, Any], migrated_database: str
) -> None:
    run_id = await _tested(migrated_database)
    await _sign_in(client, "vic")
    listing = await (await client.get("/ui/tests")).text()
    row = listing[listing.index('data-test="shop/smoke"') :].split("</tr>", 1)[0]
    assert 'data-testid="test-status">Failed<' in row
    assert '<td data-testid="test-passed">1</td><td data-testid="test-failed">1</td>' in row

    page = await client.get("/ui/tests/shop/smoke")
    html = await page.text()
    assert page.status == 200
    assert f'data-run="{run_id}"' in html
    assert 'data-case="passes"' in html
    assert html.index('data-case="passes"') < html.index('data-case="fails"')  # case order
    assert "<code>phase</code>: expected <code>&#34;Succeeded&#34;</code>, got " in html
    assert HOSTILE not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert 'http-equiv="refresh"' not in html  # the run has ended
    assert 'data-testid="run-test"' not in html  # a viewer has no Run button

    csrf = re.search(r'name="csrf" value="([^"]+)"', html)
    assert csrf is not None
    refused = await client.post("/ui/tests/shop/smoke/run", data={"csrf": csrf.group(1)})
    assert refused.status == 403
    assert "vic lacks the permission tests:run in namespace &#39;shop&#39;" in (
        await refused.text()
    )

    definition = await (await client.get("/ui/definitions/shop/shop")).text()
    tests = definition[definition.index('data-testid="definition-tests"') :]
    assert 'href="/ui/tests/shop/smoke"' in tests
    assert 'data-testid="test-status">Failed<' in tests

    assert (await client.get("/ui/tests/shop/nothing")).status == 404
    assert (await client.get(f"/ui/tests/shop/smoke?run={uuid.uuid4()}")).status == 404
    assert (await client.get("/ui/tests/shop/smoke?run=42")).status == 400
    assert (await client.get("/ui/tests/shop/smoke?after=zz")).status == 400


async def test_an_editor_runs_a_test_with_the_csrf_token_and_its_page_waits_for_it(
    client: TestClient[Any, Any], migrated_database: str
) -> None:
    await _tested(migrated_database)
    await _sign_in(client, "ada")
    html = await (await client.get("/ui/tests/shop/smoke")).text()
    assert 'data-testid="run-test"' in html
    forged = await client.post("/ui/tests/shop/smoke/run", data={"csrf": "forged"})
    assert forged.status == 403
    assert "CSRF" in await forged.text()
    csrf = re.search(r'name="csrf" value="([^"]+)"', html)
    assert csrf is not None
    started = await client.post(
        "/ui/tests/shop/smoke/run", data={"csrf": csrf.group(1)}, allow_redirects=False
    )
    assert started.status == 303, await started.text()
    async with await psycopg.AsyncConnection.connect(migrated_database) as conn:
        cur = await conn.execute(
            "SELECT id, status, requested_by FROM testing_framework_service.test_runs "
            "ORDER BY created_at DESC LIMIT 1"
        )
        newest = await cur.fetchone()
    assert newest is not None
    assert newest[1:] == ("Pending", "api")
    assert started.headers["Location"].startswith(f"/ui/tests/shop/smoke?run={newest[0]}&")
    waiting = await (await client.get(started.headers["Location"])).text()
    # It reloads itself (without the notice) until the run ends.
    assert f'<meta http-equiv="refresh" content="3; url=/ui/tests/shop/smoke?run={newest[0]}">' in (
        waiting
    )
    assert 'data-testid="notice">run requested' in waiting
    assert 'data-testid="run-status">Pending<' in waiting

    missing = await client.post("/ui/tests/shop/nothing/run", data={"csrf": csrf.group(1)})
    assert missing.status == 404
    assert "no WorkflowTest &#39;nothing&#39; is stored in namespace &#39;shop&#39;" in (
        await missing.text()
    )
