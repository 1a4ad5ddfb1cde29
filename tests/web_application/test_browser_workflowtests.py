"""The WorkflowTest pages in a real browser: Debian's Chromium driven by Playwright against
a real ``plait api`` process, the real operator, PostgreSQL and the local control plane.
An editor runs a test from its page and reads each case's result once the operator has
carried the run out; a viewer sees no Run button and the server refuses the run anyway.

Screenshots go where the other browser tests put theirs (``$PLAIT_TEST_ARTIFACTS``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from plait.testing._process import wait_until
from tests.api.test_workflowtests import HOSTILE, TEST, WORKFLOW
from tests.fixtures.kube import Kube
from tests.fixtures.operator import StartOperator
from tests.web_application import test_browser
from tests.web_application.test_browser import PASSWORD, Dashboard, _shot, _sign_in

pytestmark = pytest.mark.e2e

# The real plait api and the browser of the other browser tests.
dashboard = test_browser.dashboard
browser_context = test_browser.browser_context


def _ready(kube: Kube, name: str) -> bool:
    obj = json.loads(kube.kubectl("get", "workflowtest", name, "-o", "json"))
    conditions = (obj.get("status") or {}).get("conditions") or []
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def test_run_a_workflow_test_from_its_page_and_read_its_results(
    dashboard: Dashboard,
    kube: Kube,
    start_operator: StartOperator,
    browser_context: Any,
    tmp_path: Path,
) -> None:
    ns = kube.namespace
    for username, role in (("ada", "editor"), ("vic", "viewer")):
        dashboard.call(
            "POST", "/v1/auth/users", {"username": username, "password": PASSWORD, "roles": [role]}
        )
    start_operator()
    files = tmp_path / "checkout.yaml"
    files.write_text(yaml.safe_dump_all([WORKFLOW, TEST], sort_keys=False))
    kube.kubectl("apply", "-f", str(files))
    wait_until(lambda: _ready(kube, "checkout"), timeout=60, what="the WorkflowTest to be Ready")

    page = browser_context.new_page()
    errors: list[str] = []
    dialogs: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    _sign_in(page, dashboard.url, "ada")

    page.click("nav a:text('Tests')")
    row = page.locator(f"tr[data-test='{ns}/checkout']")
    assert row.count() == 1
    assert "never run" in row.inner_text()
    page.click(f"tr[data-test='{ns}/checkout'] a[href='/ui/tests/{ns}/checkout']")
    page.click("[data-testid=run-test]")
    assert page.inner_text("[data-testid=notice]").startswith("run requested")
    _shot(page, "20-test-run-requested")
    # The page reloads itself until the operator has judged every case.
    page.wait_for_selector("[data-testid=case-results]", timeout=180_000)
    assert page.inner_text("[data-testid=run-status]") == "Failed"
    passed = page.locator("tr[data-case='charges-then-sends-a-receipt']")
    failed = page.locator("tr[data-case='expects-a-charge-that-fails']")
    assert passed.locator("[data-testid=case-outcome]").inner_text() == "Passed"
    assert failed.locator("[data-testid=case-outcome]").inner_text() == "Failed"
    detail = failed.locator("[data-testid=case-detail]").inner_text()
    assert 'phase: expected "Succeeded", got "Failed"' in detail
    assert 'tasks.receipt.state: expected "Succeeded", got "Skipped"' in detail
    # The mock's message is shown as the text it is; its markup never runs.
    assert HOSTILE in failed.locator("[data-testid=case-failure]").inner_text()
    assert failed.locator("img").count() == 0
    _shot(page, "21-test-results")

    # The case's WorkflowInstance is a link to its run.
    failed.locator("a[href^='/ui/runs/']").click()
    page.wait_for_selector("[data-testid=run-phase]")
    assert page.inner_text("[data-testid=run-phase]") == "Failed"

    # The tests list and the workflow's page show the last results.
    page.goto(f"{dashboard.url}/ui/tests?namespace={ns}")
    assert row.locator("[data-testid=test-status]").inner_text() == "Failed"
    assert row.locator("[data-testid=test-passed]").inner_text() == "1"
    assert row.locator("[data-testid=test-failed]").inner_text() == "1"
    _shot(page, "22-tests")
    page.goto(f"{dashboard.url}/ui/definitions/{ns}/checkout")
    tests = page.locator("[data-testid=definition-tests] tr[data-test='checkout']")
    assert tests.locator("[data-testid=test-status]").inner_text() == "Failed"
    _shot(page, "23-definition-tests")

    # A viewer reads the results, sees no Run button, and a run it posts is refused.
    page.context.clear_cookies()
    _sign_in(page, dashboard.url, "vic")
    page.goto(f"{dashboard.url}/ui/tests/{ns}/checkout")
    assert page.locator("[data-testid=case-results]").count() == 1
    assert page.locator("[data-testid=run-test]").count() == 0
    csrf = page.get_attribute("form.who input[name=csrf]", "value")
    refused = page.request.post(
        f"{dashboard.url}/ui/tests/{ns}/checkout/run", form={"csrf": csrf or ""}
    )
    assert refused.status == 403
    assert "vic lacks the permission tests:run" in refused.text()
    _shot(page, "24-viewer-test")
    runs = page.locator("[data-testid=test-runs] tbody tr")
    assert runs.count() == 1  # the refused request stored nothing
    assert not errors, errors
    assert not dialogs, dialogs
