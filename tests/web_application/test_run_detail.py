"""A run's page data (real PostgreSQL): the graph built from each task's current attempt
state alone, and the attempts read in full only for the task table's page."""

from __future__ import annotations

import uuid

import psycopg
from psycopg.types.json import Jsonb

from plait.kernel.database import Database
from plait.web_application import queries
from tests.web_application import test_pages

database = test_pages.database  # the dashboard's databases, as test_pages.py opens them

IMAGE = {"image": "busybox"}


def _seed(dsn: str, name: str, tasks: list[dict[str, object]], rows: list[tuple]) -> uuid.UUID:
    """A Running run of a one-off definition with the given attempts: (task, attempt,
    state, superseded)."""
    run = uuid.uuid4()
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO workflow_orchestrator_service.workflow_definitions (namespace, name, "
            "version, spec, spec_hash) VALUES ('shop', %s, 1, %s, %s)",
            (name, Jsonb({"tasks": tasks}), "0" * 64),
        )
        conn.execute("SET session_replication_role = replica")  # history written directly
        conn.execute(
            "INSERT INTO workflow_orchestrator_service.workflow_instances (id, namespace, name, "
            "workflow_name, workflow_version, phase, started_at) "
            "VALUES (%s, 'shop', %s, %s, 1, 'Running', now())",
            (run, f"{name}-run", name),
        )
        for task, attempt, state, superseded in rows:
            conn.execute(
                "INSERT INTO task_execution_service.task_instances (namespace, "
                "workflow_instance_id, task_name, attempt, job_name, state, outputs, "
                "started_at, finished_at, superseded_at) VALUES ('shop', %s, %s, %s, %s, %s, "
                "%s, now(), CASE WHEN %s <> 'Running' THEN now() END, CASE WHEN %s THEN now() END)",
                (
                    run,
                    task,
                    attempt,
                    f"{name}-{task}-{attempt}".replace("[", "-").replace("]", ""),
                    state,
                    Jsonb({"said": f"{task}#{attempt}"}),
                    state,
                    superseded,
                ),
            )
    return run


async def test_the_graph_has_each_tasks_current_state_and_only_the_page_is_read_in_full(
    database: Database, migrated_database: str
) -> None:
    tasks: list[dict[str, object]] = [
        {"name": "a", "template": IMAGE},
        {"name": "b", "template": IMAGE, "dependencies": ["a"], "forEach": {"items": [1, 2, 3]}},
        {"name": "c", "template": IMAGE, "dependencies": ["b"]},
    ]
    rows = [
        ("a", 1, "Failed", False),
        ("a", 2, "Succeeded", False),
        ("b[0]", 1, "Succeeded", False),
        ("b[1]", 1, "Failed", False),
        ("b[1]", 2, "Running", False),
        ("c", 1, "Failed", True),  # superseded by a retry of the run: c is to run again
    ]
    _seed(migrated_database, "fan", tasks, rows)
    # The same without the fan-out: the graph's states come from the lean read alone.
    _seed(migrated_database, "plain", [tasks[0], {**tasks[2], "dependencies": ["a"]}], rows)

    detail = await queries.run_detail(database, "shop", "fan-run")
    assert detail is not None
    assert detail.graph() == {
        "nodes": [
            {"id": "a", "state": "Succeeded"},
            {
                "id": "b",
                "state": "Running",
                "items": 3,
                "itemStates": {"Succeeded": 1, "Running": 1, "Planned": 1},
            },
            {"id": "c", "state": "Planned"},
        ],
        "edges": [[0, 1], [1, 2]],
    }
    assert all(not n.attempts for n in detail.nodes)  # nothing read in full yet
    await queries.read_attempts(database, detail.instance, detail.nodes[:2])
    a, b, c = detail.nodes
    assert [(x.task_name, x.attempt, x.outputs) for x in a.attempts] == [
        ("a", 1, {"said": "a#1"}),
        ("a", 2, {"said": "a#2"}),
    ]
    assert [(x.task_name, x.attempt, x.state.value) for x in b.attempts] == [
        ("b[0]", 1, "Succeeded"),
        ("b[1]", 1, "Failed"),
        ("b[1]", 2, "Running"),
    ]
    assert c.attempts == []  # not on the page: never read

    plain = await queries.run_detail(database, "shop", "plain-run")
    assert plain is not None
    assert plain.graph() == {
        "nodes": [{"id": "a", "state": "Succeeded"}, {"id": "c", "state": "Planned"}],
        "edges": [[0, 1]],
    }
    await queries.read_attempts(database, plain.instance, plain.nodes[1:])
    assert plain.nodes[0].attempts == []
    assert plain.nodes[1].attempts == []  # c's only attempt is superseded
