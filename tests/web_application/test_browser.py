"""The dashboard in a real browser: Debian's Chromium driven by Playwright against a real
``plait api`` process, the real operator, PostgreSQL and the local control plane.

Screenshots of every page go to ``$PLAIT_TEST_ARTIFACTS`` (default
``.local/test-artifacts/dashboard``), kept after the test.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from plait.kernel.components import COMPONENTS
from plait.testing._process import free_port, stop_process, wait_until
from tests.fixtures.kube import Kube, KubeCluster
from tests.fixtures.operator import StartOperator

pytestmark = pytest.mark.e2e

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
PASSWORD = "a long enough password 42"
ARTIFACTS = (
    Path(
        os.environ.get("PLAIT_TEST_ARTIFACTS", Path(__file__).parents[2] / ".local/test-artifacts")
    )
    / "dashboard"
)
#: A task output that must show as text, never run.
HOSTILE = "<script>document.title='pwned'</script><img src=x onerror=alert(1)>"


@dataclass
class Dashboard:
    url: str
    token: str
    process: subprocess.Popen[bytes]
    log: Path

    def call(self, method: str, path: str, body: Any) -> Any:
        request = urllib.request.Request(
            self.url + path,
            method=method,
            data=json.dumps(body).encode(),
            headers={"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as resp:
            return json.loads(resp.read() or b"null")


@pytest.fixture
def dashboard(
    plait_crds: KubeCluster, kube: Kube, component_dsns: dict[str, str], tmp_path: Path
) -> Iterator[Dashboard]:
    """A real ``plait api`` on a free port, with accounts and the dashboard."""
    port = free_port()
    token = "shared-" + secrets.token_hex(12)
    env = {
        **os.environ,
        **{f"PLAIT_DATABASE_URL_{c.env_suffix}": component_dsns[c.name] for c in COMPONENTS},
        "PLAIT_API_TOKEN": token,
        "PLAIT_AUTH_TOKEN_KEY": secrets.token_hex(32),
        "PLAIT_AUTH_COOKIE_SECURE": "false",
        "PLAIT_DASHBOARD_KUBECONFIG": str(kube.kubeconfig),
    }
    env.pop("PLAIT_DATABASE_URL", None)
    log = tmp_path / "api.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "plait", "api", "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        try:
            with urllib.request.urlopen(url + "/readyz", timeout=2) as resp:
                return bool(resp.status == 200)
        except OSError:
            return False

    try:
        wait_until(ready, timeout=60, what="plait api to be ready")
        yield Dashboard(url, token, process, log)
    finally:
        stop_process(process)


@pytest.fixture
def browser_context(tmp_path: Path) -> Iterator[Any]:
    """Chromium from Debian (never a downloaded browser), a fresh profile."""
    if not CHROMIUM.exists():
        pytest.skip("Debian's chromium is not installed (hack/install-deps.sh installs it)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"),
            executable_path=str(CHROMIUM),
            headless=True,
            args=CHROMIUM_FLAGS,
            viewport={"width": 1280, "height": 900},
        )
        try:
            yield context
        finally:
            context.close()


def _task(name: str, deps: list[str], duration: str, outputs: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": name,
        "template": {
            "image": "busybox",
            "podMetadata": {
                "annotations": {
                    "sim.plait.dev/exit-code": "0",
                    "sim.plait.dev/duration": duration,
                    "sim.plait.dev/message": json.dumps(outputs),
                }
            },
        },
        **({"dependencies": deps} if deps else {}),
    }


def _submit(kube: Kube, definition: str, run: str, tasks: list[dict[str, Any]]) -> None:
    """Apply the definition (unless ``tasks`` is empty: it exists), then start a run."""
    if not tasks:
        _create_run(kube, definition, run)
        return
    kube.kubectl(
        "apply",
        "-f",
        "-",
        input=json.dumps(
            {
                "apiVersion": "plait.dev/v1alpha1",
                "kind": "WorkflowDefinition",
                "metadata": {"name": definition},
                "spec": {"tasks": tasks},
            }
        ),
    )
    _create_run(kube, definition, run)


def _create_run(
    kube: Kube, definition: str, run: str, arguments: dict[str, Any] | None = None
) -> None:
    kube.kubectl(
        "create",
        "-f",
        "-",
        input=json.dumps(
            {
                "apiVersion": "plait.dev/v1alpha1",
                "kind": "WorkflowInstance",
                "metadata": {"name": run},
                "spec": {"workflowRef": {"name": definition}, "arguments": arguments or {}},
            }
        ),
    )


def _phase(kube: Kube, run: str) -> str:
    return kube.kubectl("get", "wfi", run, "-o", "jsonpath={.status.phase}")


def _shot(page: Any, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def _sign_in(page: Any, url: str, username: str) -> None:
    page.goto(url + "/ui/runs")
    assert "/ui/login" in page.url  # not signed in: sent to the sign-in page
    page.fill("#username", username)
    page.fill("#password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url("**/ui/runs**")
    assert page.inner_text("[data-testid=whoami]") == username


def test_sign_in_open_a_run_read_its_logs_cancel_it_and_a_viewer_is_refused(
    dashboard: Dashboard,
    kube: Kube,
    start_operator: StartOperator,
    browser_context: Any,
) -> None:
    ns = kube.namespace
    dashboard.call(
        "POST", "/v1/auth/users", {"username": "ada", "password": PASSWORD, "roles": ["editor"]}
    )
    dashboard.call(
        "POST", "/v1/auth/users", {"username": "vic", "password": PASSWORD, "roles": ["viewer"]}
    )
    start_operator()
    _submit(
        kube,
        "shop",
        "shop-run",
        [
            _task("fetch", [], "0s", {"note": HOSTILE}),
            _task("pack", ["fetch"], "600s", {}),
            _task("ship", ["pack"], "0s", {}),
        ],
    )
    wait_until(lambda: _phase(kube, "shop-run") == "Running", timeout=90, what="the run to start")

    page = browser_context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("dialog", lambda dialog: dialog.accept())

    # A wrong password is refused on the page, with the reason.
    page.goto(dashboard.url + "/ui/login")
    _shot(page, "01-sign-in")
    page.fill("#username", "ada")
    page.fill("#password", "not the password at all")
    page.click("button[type=submit]")
    assert "wrong username or password" in page.inner_text("[data-testid=login-error]")

    _sign_in(page, dashboard.url, "ada")
    row = page.locator(f"tr[data-run='{ns}/shop-run']")
    assert row.count() == 1
    assert row.locator("[data-testid=phase]").inner_text() == "Running"
    _shot(page, "02-runs")

    # The run's page: the graph is drawn by the script, with every task (ship not run yet).
    page.click(f"a[href='/ui/runs/{ns}/shop-run']")
    try:
        page.wait_for_selector("#dag svg a.node", state="attached")
    finally:
        _shot(page, "03-run")
    assert not errors, errors
    assert page.locator("#dag a.node").count() == 3
    assert page.locator("#dag a[data-task=ship] g.state-Planned").count() == 1
    # The hostile output is text: shown as written, never run.
    page.locator("#task-fetch summary").click()
    assert HOSTILE in page.inner_text("#task-fetch [data-testid=task-outputs]")
    assert page.title() == "shop-run · Plait"

    # Logs from the observability tables (the operator ships its records as they happen).
    def logs_shown() -> bool:
        page.reload()
        return page.locator("[data-testid=logs] .log").count() > 0

    wait_until(logs_shown, timeout=60, what="the run's logs on its page")
    _shot(page, "03-run")

    # A viewer sees no actions, and the server refuses the action anyway.
    page.context.clear_cookies()
    _sign_in(page, dashboard.url, "vic")
    page.goto(f"{dashboard.url}/ui/runs/{ns}/shop-run")
    assert page.locator("[data-testid=actions]").count() == 0
    csrf = page.get_attribute("form.who input[name=csrf]", "value")
    refused = page.request.post(
        f"{dashboard.url}/ui/runs/{ns}/shop-run/cancel", form={"csrf": csrf or ""}
    )
    assert refused.status == 403
    assert "vic lacks the permission instances:write" in refused.text()
    _shot(page, "04-viewer-run")

    page.context.clear_cookies()
    _sign_in(page, dashboard.url, "ada")
    page.goto(f"{dashboard.url}/ui/runs/{ns}/shop-run")
    # A write without the session's CSRF token is refused.
    forged = page.request.post(f"{dashboard.url}/ui/runs/{ns}/shop-run/cancel", form={})
    assert forged.status == 403
    assert _phase(kube, "shop-run") == "Running"
    page.click("button.action-cancel")
    page.wait_for_selector("[data-testid=notice]")
    assert page.inner_text("[data-testid=notice]") == "cancel requested"
    wait_until(lambda: _phase(kube, "shop-run") == "Cancelled", timeout=60, what="the cancel")
    page.reload()
    assert page.inner_text("[data-testid=run-phase]") == "Cancelled"
    _shot(page, "05-cancelled")

    # A narrow window: the list still reads (no horizontal page scroll).
    page.set_viewport_size({"width": 380, "height": 800})
    page.goto(dashboard.url + "/ui/runs")
    assert page.evaluate("document.documentElement.scrollWidth") <= 400
    _shot(page, "06-runs-narrow")
    assert not errors, errors


def test_submit_from_the_form_and_watch_it_succeed_live(
    dashboard: Dashboard,
    kube: Kube,
    start_operator: StartOperator,
    browser_context: Any,
) -> None:
    ns = kube.namespace
    dashboard.call(
        "POST", "/v1/auth/users", {"username": "ada", "password": PASSWORD, "roles": ["editor"]}
    )
    start_operator()
    kube.kubectl(
        "apply",
        "-f",
        "-",
        input=json.dumps(
            {
                "apiVersion": "plait.dev/v1alpha1",
                "kind": "WorkflowDefinition",
                "metadata": {"name": "greet"},
                "spec": {
                    "parameters": [
                        {"name": "who", "description": "Whom to greet."},
                        {"name": "times", "type": "integer", "default": 2},
                    ],
                    "tasks": [
                        _task("hello", [], "2s", {"said": "hi"}),
                        _task("bye", ["hello"], "2s", {}),
                    ],
                },
            }
        ),
    )
    page = browser_context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    _sign_in(page, dashboard.url, "ada")

    # The list shows a run started elsewhere, without a reload.
    page.goto(f"{dashboard.url}/ui/runs?namespace={ns}&definition=greet")
    page.wait_for_selector("body[data-live_state='open']", state="attached")
    page.evaluate("window.__same_page = true")
    _create_run(kube, "greet", "greet-by-kubectl", {"who": "kubectl"})
    page.wait_for_selector(f"tr[data-run='{ns}/greet-by-kubectl']", timeout=30_000)
    assert page.evaluate("window.__same_page") is True
    _shot(page, "07-runs-live")

    # The form is made from the parameters; a wrong value is refused with the reason.
    page.click("[data-testid=submit-link]")
    assert page.input_value("#p-times") == "2"
    page.fill("#p-who", "<b>world</b>")
    # A number field takes no letters; a hand-made request can send them all the same.
    page.evaluate("const i = document.querySelector('#p-times'); i.type = 'text'; i.value = 'two'")
    page.click("[data-testid=submit]")
    assert "times must be an integer, got 'two'" in page.inner_text("[data-testid=submit-error]")
    _shot(page, "08-submit-refused")
    page.fill("#p-times", "3")
    page.click("[data-testid=submit]")
    page.wait_for_url(f"**/ui/runs/{ns}/greet-*")
    name = page.url.rsplit("/", 1)[1]
    page.evaluate("window.__same_page = true")
    page.wait_for_selector("[data-testid=run-phase]:text('Succeeded')", timeout=90_000)
    assert page.evaluate("window.__same_page") is True  # updated in place, never reloaded
    assert int(page.evaluate("document.body.dataset.updates")) >= 1
    assert page.locator("#dag a[data-task=bye] g.state-Succeeded").count() == 1
    inputs = json.loads(page.inner_text("[data-testid=run-inputs]"))
    assert inputs == {"who": "<b>world</b>", "times": 3}
    # PostgreSQL (what the page shows) is written first, the object's status right after.
    wait_until(lambda: _phase(kube, name) == "Succeeded", timeout=30, what="the status")
    _shot(page, "09-succeeded-live")
    assert not errors, errors


def test_overview_with_a_custom_panel_definitions_events_and_a_dead_letter_replayed(
    dashboard: Dashboard, kube: Kube, migrated_database: str, browser_context: Any, tmp_path: Path
) -> None:
    import asyncio
    import concurrent.futures

    from plait.workflow_orchestrator import repository as orchestrator
    from tests.web_application.test_pages import PANEL, _dead_letter

    ns = kube.namespace
    dashboard.call(
        "POST", "/v1/auth/users", {"username": "ada", "password": PASSWORD, "roles": ["editor"]}
    )

    async def seed() -> Any:
        import psycopg

        async with await psycopg.AsyncConnection.connect(migrated_database, autocommit=True) as c:
            one = {"tasks": [{"name": "a", "template": {"image": "busybox"}}]}
            two = {
                "parameters": [{"name": "region", "default": "eu"}],
                "tasks": [*one["tasks"], {"name": "b", "template": {"image": "alpine"}}],
            }
            await orchestrator.upsert_workflow_definition(c, ns, "shop", one)
            await orchestrator.upsert_workflow_definition(c, ns, "shop", two)
        return await _dead_letter(migrated_database, ns, "order-7")

    with concurrent.futures.ThreadPoolExecutor(1) as pool:  # this thread may run a loop
        letter = pool.submit(asyncio.run, seed()).result()
    panel = tmp_path / "panel.yaml"
    panel.write_text(PANEL)
    applied = subprocess.run(
        [
            sys.executable,
            "-m",
            "plait",
            "ui",
            "apply",
            "-f",
            str(panel),
            "--url",
            dashboard.url,
            "--token",
            dashboard.token,
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert applied.returncode == 0, applied.stderr
    assert applied.stdout == "failed-runs v1 stored\n"

    page = browser_context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("dialog", lambda dialog: dialog.accept())
    _sign_in(page, dashboard.url, "ada")

    page.click("nav a:text('Overview')")
    page.wait_for_selector("[data-panel='failed-runs']")
    assert "Failed runs <b>today</b>" in page.inner_text("[data-panel='failed-runs'] h2")
    assert page.locator("[data-panel='runs-per-minute']").count() == 1
    assert page.locator("[data-testid=panel-error]").count() == 0  # empty panels say so
    _shot(page, "10-overview")

    page.click("nav a:text('Definitions')")
    page.click(f"tr[data-definition='{ns}/shop'] a")
    page.select_option("select[name=diff]", "1")
    page.click("form[aria-label='Compare versions'] button")
    added = [ln for ln in page.inner_text("[data-testid=diff]").splitlines() if ln[:1] == "+"]
    assert '+        "image": "alpine"' in added
    _shot(page, "11-definition-diff")

    page.click("nav a:text('Events')")
    page.select_option("select[name=namespace]", ns)
    page.click("form[role=search] button")
    assert page.locator("tr[data-event='order-7']").count() == 1
    _shot(page, "12-events")

    page.goto(f"{dashboard.url}/ui/deadletters?namespace={ns}")
    row = page.locator(f"tr[data-letter='{letter}']")
    assert row.locator("[data-testid=letter-status]").inner_text() == "Open"
    row.locator("[data-testid=replay]").click()
    page.wait_for_selector("[data-testid=notice]")
    assert page.inner_text("[data-testid=notice]") == "replayed order.created order-7"
    assert row.locator("[data-testid=letter-status]").inner_text() == "Replayed"
    _shot(page, "13-dead-letter-replayed")
    assert not errors, errors


def test_a_large_graph_is_folded_into_groups_that_open_and_the_task_table_pages(
    dashboard: Dashboard, kube: Kube, migrated_database: str, browser_context: Any
) -> None:
    """A fan-out of 8 sibling tasks and a lattice of 20 layers of 10 (210 tasks): the
    siblings are one group, and, still over the limit, each lattice layer is one group."""
    import uuid

    import psycopg
    from psycopg.types.json import Jsonb

    ns = kube.namespace
    fan = [f"fan-{i}" for i in range(8)]
    tasks: list[dict[str, Any]] = [_task("root", [], "0s", {})]
    tasks += [_task(name, ["root"], "0s", {}) for name in fan]
    tasks.append(_task("join", fan, "0s", {}))
    for layer in range(20):
        for j in range(10):
            deps = [f"t{layer - 1}-{j}", f"t{layer - 1}-{(j + 1) % 10}"] if layer else ["join"]
            tasks.append(_task(f"t{layer}-{j}", deps, "0s", {}))
    run_id = uuid.uuid4()
    with psycopg.connect(migrated_database, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO workflow_orchestrator_service.workflow_definitions (namespace, name, "
            "version, spec, spec_hash) VALUES (%s, 'wide', 1, %s, %s)",
            (ns, Jsonb({"tasks": tasks}), "0" * 64),
        )
        # A run in the middle, written directly (transition triggers off for this session).
        conn.execute("SET session_replication_role = replica")
        conn.execute(
            "INSERT INTO workflow_orchestrator_service.workflow_instances (id, namespace, name, "
            "workflow_name, workflow_version, phase, started_at) VALUES (%s, %s, 'wide-run', "
            "'wide', 1, 'Running', now())",
            (run_id, ns),
        )
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO task_execution_service.task_instances (namespace, "
                "workflow_instance_id, task_name, attempt, job_name, state, started_at, "
                "finished_at) VALUES (%s, %s, %s, 1, %s, 'Succeeded', now(), now())",
                [(ns, run_id, name, f"wide-run-{name}-1") for name in ["root", *fan]],
            )
    dashboard.call(
        "POST", "/v1/auth/users", {"username": "vic", "password": PASSWORD, "roles": ["viewer"]}
    )
    page = browser_context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    _sign_in(page, dashboard.url, "vic")
    page.goto(f"{dashboard.url}/ui/runs/{ns}/wide-run")
    page.wait_for_selector("#dag svg a.node", state="attached")
    nodes = page.locator("#dag a.node")
    # root, the 8 siblings as one group, join, and one group per lattice layer.
    assert nodes.count() == 23
    assert page.inner_text("[data-testid=dag-summary]") == (
        "210 tasks drawn as 23 nodes; open a group to show its tasks."
    )
    siblings = page.locator("#dag a[data-group='siblings:fan-0']")
    assert siblings.get_attribute("aria-expanded") == "false"
    assert "fan-0 and 7 like it [8]" in (siblings.text_content() or "")
    assert siblings.locator("g.state-Succeeded").count() == 1
    assert page.locator("#dag a[data-group='depth:3'] g.state-Planned").count() == 1
    _shot(page, "10-large-run-folded")

    # Opening the sibling group draws its 8 tasks (they stay open: not folded by depth).
    siblings.click()
    assert nodes.count() == 23 - 1 + 8
    assert page.locator("#dag a[data-task=fan-3] g.state-Succeeded").count() == 1
    assert page.locator(".dag-bar button[data-group='siblings:fan-0']").count() == 1
    # A layer's group opens from the keyboard: its 10 tasks are drawn.
    page.locator("#dag a[data-group='depth:22']").focus()
    page.keyboard.press("Enter")
    assert nodes.count() == 30 - 1 + 10
    _shot(page, "11-large-run-opened")
    page.locator("section:has(#dag)").screenshot(path=str(ARTIFACTS / "11-large-run-graph.png"))
    # Closing the sibling group folds its tasks again.
    page.click(".dag-bar button[data-group='siblings:fan-0']")
    assert nodes.count() == 39 - 8 + 1
    assert page.locator("#dag a[data-task=fan-3]").count() == 0

    # The table shows 100 tasks a page; a task of the third page, clicked in the graph,
    # opens its own rows.
    assert page.locator("table.tasks > tbody").count() == 100
    assert page.inner_text("[data-testid=task-pager] >> nth=0").startswith("Tasks 1 to 100 of 210.")
    assert page.locator("tbody#task-t19-9").count() == 0
    page.click("#dag a[data-task=t19-9]")
    page.wait_for_url("**task=t19-9**")
    assert page.locator("table.tasks > tbody").count() == 1
    assert page.locator("tbody#task-t19-9").count() == 1
    page.click("[data-testid=task-pager] >> nth=0 >> a:text('All tasks')")
    page.click("[data-testid=task-pager] >> nth=0 >> a[rel=next]")
    assert page.locator("table.tasks > tbody").count() == 100
    page.click("[data-testid=task-pager] >> nth=0 >> a[rel=next]")
    assert page.locator("table.tasks > tbody").count() == 10
    assert page.locator("tbody#task-t19-9 td span.state-Planned").count() == 1
    assert not errors, errors
