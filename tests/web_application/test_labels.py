"""The run list's label filter (real PostgreSQL, in-process): selectors checked with a
reason, exactly the labelled runs in keyset pages, and the GIN index used on a larger
table. ``test_browser.py`` creates labelled runs through the operator and filters them in
Chromium."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from typing import Any

import psycopg
import pytest
from aiohttp.test_utils import TestClient
from psycopg import sql

from plait.errors import ValidationError
from plait.kernel.database import Database
from plait.testing._process import wait_until
from plait.web_application import queries
from plait.web_application.queries import LabelRequirement, RunFilter, parse_labels
from plait.workflow_orchestrator import repository as orchestrator
from tests.fixtures.kube import Kube
from tests.fixtures.operator import StartOperator
from tests.web_application import test_browser, test_pages
from tests.web_application.test_pages import PASSWORD, SPEC, _sign_in

# The in-process dashboard and its database, as test_pages.py makes them.
database = test_pages.database
client = test_pages.client

START = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


async def _labelled_runs(dsn: str, namespace: str, labels: list[dict[str, str]]) -> list[uuid.UUID]:
    """A run per entry of ``labels``, one second apart (newest last), recorded as the
    operator records them (``create_workflow_instance`` with the object's labels)."""
    ids = []
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        await orchestrator.upsert_workflow_definition(conn, namespace, "shop", SPEC)
        for i, these in enumerate(labels):
            run, _ = await orchestrator.create_workflow_instance(
                conn,
                id=uuid.uuid4(),
                namespace=namespace,
                name=f"run-{i}",
                workflow_name="shop",
                workflow_version=1,
                labels=these,
            )
            await conn.execute(
                "UPDATE workflow_orchestrator_service.workflow_instances SET created_at = %s "
                "WHERE id = %s",
                (START + dt.timedelta(seconds=i), run.id),
            )
            ids.append(run.id)
    return ids


def test_label_selectors_are_read_as_kubectl_reads_them_and_bad_ones_say_why() -> None:
    assert parse_labels(["team=shop, tier", "app.kubernetes.io/name==plait", ""]) == (
        LabelRequirement("team", "shop"),
        LabelRequirement("tier"),
        LabelRequirement("app.kubernetes.io/name", "plait"),
    )
    assert parse_labels(["team=", "team="]) == (LabelRequirement("team", ""),)
    for selector, said in (
        ("team!=shop", "only key=value and key (the label is set) are supported"),
        ("!team", "only key=value and key"),
        ("env in (a,b)", "only key=value and key"),
        ("Team_/x=1", "'Team_/x' is not a Kubernetes label key"),
        ("-team=1", "'-team' is not a Kubernetes label key"),
        ("t" * 64, "is not a Kubernetes label key"),
        ("team=a b", "'a b' is not a Kubernetes label value"),
        ("team=a=b", "'a=b' is not a Kubernetes label value"),
        ("team=" + "v" * 64, "is not a Kubernetes label value"),
    ):
        with pytest.raises(ValidationError, match=r"label .*: ") as caught:
            parse_labels([selector])
        assert said in str(caught.value), (selector, str(caught.value))


@pytest.mark.parametrize("rare_below", [queries.RARE_LABEL_RUNS, 1])
async def test_the_label_filter_pages_exactly_the_labelled_runs_by_keyset(
    database: Database, migrated_database: str, rare_below: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both ways of reading: through the labels index (the labels are rare here), and
    along each namespace's keyset index (every label counted as common)."""
    monkeypatch.setattr(queries, "RARE_LABEL_RUNS", rare_below)

    # In each namespace, runs 0, 3, 6, ... are team=a; every even one is also tier=gold.
    def labels(i: int) -> dict[str, str]:
        these = {"team": "a" if i % 3 == 0 else "b", "app.kubernetes.io/part-of": "shop"}
        if i % 2 == 0:
            these["tier"] = "gold"
        return these

    shop = await _labelled_runs(migrated_database, "shop", [labels(i) for i in range(13)])
    books = await _labelled_runs(migrated_database, "books", [labels(i) for i in range(7)])
    created = {run: i for ids in (shop, books) for i, run in enumerate(ids)}

    async def walk(f: RunFilter) -> list[uuid.UUID]:
        seen: list[uuid.UUID] = []
        async with database.connection("workflow_orchestrator") as conn:
            while True:
                page = await queries.runs_page(conn, ["books", "shop"], f, limit=2)
                seen += [r.id for r in page.runs]
                if page.next_cursor is None:
                    return seen
                f = RunFilter(labels=f.labels, cursor=page.next_cursor)

    team_a = await walk(RunFilter(labels=parse_labels(["team=a"])))
    expected = {r for ids in (shop, books) for i, r in enumerate(ids) if i % 3 == 0}
    assert len(team_a) == len(set(team_a)) == len(expected) == 8
    assert set(team_a) == expected
    # Newest first across both namespaces (created_at ties broken by id, descending).
    assert [created[r] for r in team_a] == sorted((created[r] for r in team_a), reverse=True)
    gold_a = await walk(RunFilter(labels=parse_labels(["team=a,tier=gold"])))
    assert {created[r] for r in gold_a} == {0, 6, 12}
    assert len(gold_a) == 5  # shop 0, 6, 12 and books 0, 6
    tier_set = await walk(RunFilter(labels=parse_labels(["tier"])))
    assert len(tier_set) == 7 + 4
    prefixed = await walk(RunFilter(labels=parse_labels(["app.kubernetes.io/part-of=shop"])))
    assert len(prefixed) == 20
    assert await walk(RunFilter(labels=parse_labels(["team=a", "team=b"]))) == []
    assert await walk(RunFilter(labels=parse_labels(["team=c"]))) == []


async def test_the_run_list_page_filters_by_label_and_refuses_a_bad_selector(
    client: TestClient[Any, Any], migrated_database: str
) -> None:
    await _labelled_runs(
        migrated_database, "shop", [{"team": "a"}, {"team": "b"}, {"team": "a", "tier": "gold"}]
    )
    await _sign_in(client, "vic")
    page = await client.get("/ui/runs?label=team%3Da&label=tier")
    html = await page.text()
    assert page.status == 200
    assert [r for r in ("run-0", "run-1", "run-2") if f'data-run="shop/{r}"' in html] == ["run-2"]
    assert 'name="label" value="team=a,tier"' in html  # the form shows the selector
    one = await (await client.get("/ui/runs?label=team%3Da")).text()
    assert 'data-run="shop/run-0"' in one
    assert 'data-run="shop/run-2"' in one
    assert 'data-run="shop/run-1"' not in one
    # The run's page shows its labels, each a link to the runs that carry it too.
    run = await (await client.get("/ui/runs/shop/run-2")).text()
    assert "<code>team=a</code>" in run
    assert "/ui/runs?namespace=shop&amp;label=team%3Da" in run
    bad = await client.get("/ui/runs?label=team%21%3Da")
    assert bad.status == 400
    assert "only key=value and key (the label is set) are supported" in await bad.text()


async def test_a_selective_label_is_read_through_the_labels_index(
    database: Database, migrated_database: str
) -> None:
    """20,000 runs in one namespace, 10 of them team=rare: the filtered page finds them
    with the GIN index on labels, not by walking the namespace; a label every run carries
    is read along the keyset index."""
    async with await psycopg.AsyncConnection.connect(migrated_database, autocommit=True) as conn:
        await orchestrator.upsert_workflow_definition(conn, "big", "shop", SPEC)
        await conn.execute(
            "INSERT INTO workflow_orchestrator_service.workflow_instances (namespace, name, "
            "workflow_name, workflow_version, created_at, labels) "
            "SELECT 'big', 'run-' || g, 'shop', 1, %s + g * interval '1 second', "
            "jsonb_build_object('team', CASE WHEN g %% 2000 = 7 THEN 'rare' "
            "ELSE 'team-' || (g %% 50) END, 'app', 'shop') "
            "FROM generate_series(1, 20000) g",
            (START,),
        )
        await conn.execute("ANALYZE workflow_orchestrator_service.workflow_instances")
        f = RunFilter(labels=(LabelRequirement("team", "rare"),))
        common = RunFilter(labels=(LabelRequirement("app", "shop"),))
        assert await queries._rare_labels(conn, f.labels)
        assert not await queries._rare_labels(conn, common.labels)
        query, params = queries.runs_query(["big"], f, by_labels=True)
        cur = await conn.execute(sql.Composed([sql.SQL("EXPLAIN (FORMAT JSON) "), query]), params)
        row = await cur.fetchone()
    assert row is not None
    plan = json.dumps(row[0])
    assert '"Index Name": "workflow_instances_labels"' in plan, plan
    async with database.connection("workflow_orchestrator") as conn:
        page = await queries.runs_page(conn, ["big"], f)
        newest = await queries.runs_page(conn, ["big"], common, limit=3)
    assert [r.name for r in newest.runs] == ["run-20000", "run-19999", "run-19998"]
    assert [r.name for r in page.runs] == [f"run-{g}" for g in range(18007, 0, -2000)]
    assert all(r.labels == {"team": "rare", "app": "shop"} for r in page.runs)


# --- through the operator, in Chromium -------------------------------------------------

dashboard = test_browser.dashboard
browser_context = test_browser.browser_context


@pytest.mark.e2e
def test_runs_labelled_in_kubernetes_are_filtered_by_label_in_the_browser(
    dashboard: test_browser.Dashboard,
    kube: Kube,
    start_operator: StartOperator,
    browser_context: Any,
) -> None:
    """Runs created with labels (kubectl), recorded by the real operator; a label added
    later with ``kubectl label`` (no new generation) reaches the list too."""
    ns = kube.namespace
    dashboard.call(
        "POST", "/v1/auth/users", {"username": "vic", "password": PASSWORD, "roles": ["viewer"]}
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
                "spec": {"tasks": [test_browser._task("hello", [], "0s", {})]},
            }
        ),
    )
    for run, labels in (
        ("red-1", {"team": "red"}),
        ("red-2", {"team": "red", "plait.example/tier": "gold"}),
        ("blue-1", {"team": "blue"}),
    ):
        kube.kubectl(
            "create",
            "-f",
            "-",
            input=json.dumps(
                {
                    "apiVersion": "plait.dev/v1alpha1",
                    "kind": "WorkflowInstance",
                    "metadata": {"name": run, "labels": labels},
                    "spec": {"workflowRef": {"name": "greet"}},
                }
            ),
        )
    for run in ("red-1", "red-2", "blue-1"):
        wait_until(
            lambda run=run: test_browser._phase(kube, run) == "Succeeded",
            timeout=120,
            what=f"run {run} to succeed",
        )

    page = browser_context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    test_browser._sign_in(page, dashboard.url, "vic")
    page.goto(f"{dashboard.url}/ui/runs?namespace={ns}")

    def shown() -> list[str]:
        runs = page.eval_on_selector_all("tr[data-run]", "rows => rows.map(r => r.dataset.run)")
        return sorted(str(run).split("/", 1)[1] for run in runs)

    assert shown() == ["blue-1", "red-1", "red-2"]
    page.fill("[data-testid=label-filter]", "team=red")
    page.click("form[role=search] button[type=submit]")
    page.wait_for_url("**label=team%3Dred**")
    assert shown() == ["red-1", "red-2"]
    page.fill("[data-testid=label-filter]", "team=red, plait.example/tier")
    page.click("form[role=search] button[type=submit]")
    page.wait_for_url("**tier**")
    assert shown() == ["red-2"]
    test_browser._shot(page, "14-runs-by-label")

    # A label changed on the object alone reaches the run's row: the list follows it.
    kube.kubectl("label", "workflowinstance", "blue-1", "team=red", "--overwrite")

    def relabelled() -> bool:
        page.goto(f"{dashboard.url}/ui/runs?namespace={ns}&label=team%3Dred")
        return shown() == ["blue-1", "red-1", "red-2"]

    wait_until(relabelled, timeout=60, what="blue-1 listed as team=red")

    # A selector Kubernetes would refuse is refused with the reason.
    page.fill("[data-testid=label-filter]", "team!=red")
    page.click("form[role=search] button[type=submit]")
    assert "only key=value and key (the label is set) are supported" in page.content()
    assert not errors, errors


async def test_a_runs_labels_are_written_again_only_when_they_differ(
    migrated_database: str,
) -> None:
    """What the operator calls with the object's labels on every generation it handles and
    on a change of labels alone."""
    [run] = await _labelled_runs(migrated_database, "shop", [{"team": "a"}])
    async with await psycopg.AsyncConnection.connect(migrated_database, autocommit=True) as conn:
        assert not await orchestrator.set_instance_labels(conn, run, {"team": "a"})
        assert await orchestrator.set_instance_labels(conn, run, {"team": "b", "tier": "gold"})
        stored = await orchestrator.get_workflow_instance(conn, run)
        assert stored is not None
        assert stored.labels == {"team": "b", "tier": "gold"}
        assert await orchestrator.set_instance_labels(conn, run, {})
        stored = await orchestrator.get_workflow_instance(conn, run)
        assert stored is not None
        assert stored.labels == {}
