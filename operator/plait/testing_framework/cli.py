"""``plait test``: run WorkflowTests.

``plait test run -f workflow.yaml -f test.yaml`` needs no cluster and no database: it reads
the files (a directory: its ``*.yaml`` and ``*.yml`` files; objects of other API groups
are skipped), validates every object as the admission
webhook does, and runs each WorkflowTest's cases on the engine with a simulated clock
(:mod:`plait.testing_framework.local`). Exit code: 0 when every case passed, 1 when one
failed or could not run, 2 when the files are invalid.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click
import yaml

from plait import API_GROUP
from plait.resources.task import TaskDefinitionSpec
from plait.resources.test import WorkflowTestSpec
from plait.resources.trigger import EventTriggerSpec
from plait.resources.validation import check_resource
from plait.resources.workflow import WorkflowDefinitionSpec
from plait.testing_framework import repository
from plait.testing_framework.results import (
    CaseResult,
    Coverage,
    StoredCoverage,
    TestResult,
    junit_xml,
    render_text,
    run_case,
)
from plait.testing_framework.states import TestRunStatus

__all__ = [
    "InvalidFiles",
    "Suite",
    "TestNotRun",
    "cluster_run",
    "load",
    "run_suite",
    "test_command",
]

#: libyaml's safe loader when PyYAML was built with it (ten times faster on large suites).
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
#: Exit code when the files themselves are invalid (not a failing case).
INVALID_EXIT = 2


class InvalidFiles(click.ClickException):
    """The files hold objects that do not validate, or a test whose workflow is missing."""

    exit_code = INVALID_EXIT


@dataclass
class Suite:
    """What the files hold: definitions by name and the tests, in file order."""

    workflows: dict[str, WorkflowDefinitionSpec]
    task_definitions: dict[str, TaskDefinitionSpec]
    tests: list[tuple[str, WorkflowTestSpec]]
    triggers: dict[str, EventTriggerSpec] = field(default_factory=dict)


def _documents(paths: Iterable[Path]) -> list[tuple[Path, dict[str, Any]]]:
    found: list[tuple[Path, dict[str, Any]]] = []
    for path in paths:
        files = (
            sorted(path.glob("*.yaml")) + sorted(path.glob("*.yml")) if path.is_dir() else [path]
        )
        for file in files:
            try:
                docs = list(yaml.load_all(file.read_text(), Loader=_LOADER))
            except yaml.YAMLError as exc:
                raise InvalidFiles(f"{file}: not YAML: {exc}") from None
            for doc in docs:
                if doc is None:
                    continue
                if not isinstance(doc, dict):
                    raise InvalidFiles(f"{file}: a document is not an object")
                if str(doc.get("apiVersion", "")).split("/")[0] != API_GROUP:
                    continue  # a manifest of something else that lives beside the workflows
                found.append((file, doc))
    return found


def load(paths: Sequence[Path]) -> Suite:
    """Read and validate the files; raises :class:`InvalidFiles` listing every problem.

    A reference to an object the files do not hold is no problem, except a WorkflowTest's
    workflow (a sub-workflow task or a TaskDefinition is only needed when a case runs it).
    """
    documents = _documents(paths)
    specs: dict[tuple[str, str], Mapping[str, Any]] = {}
    for _, doc in documents:
        name = str((doc.get("metadata") or {}).get("name", ""))
        if isinstance(doc.get("spec"), Mapping):
            specs[(str(doc.get("kind")), name)] = doc["spec"]
    problems: list[str] = []
    suite = Suite({}, {}, [])
    for file, doc in documents:
        kind = str(doc.get("kind"))
        name = str((doc.get("metadata") or {}).get("name", ""))
        found = check_resource(doc, lambda k, n: specs.get((k, n)))
        for problem in found:
            if problem.reason == "NotFound" and kind != "WorkflowTest":
                continue
            message = problem.message.replace("in this namespace", "in the files given")
            problems.append(f"{file}: {kind} {name!r}: {problem.path}: {message}")
        if found and any(p.reason != "NotFound" or kind == "WorkflowTest" for p in found):
            continue
        if kind == "WorkflowDefinition":
            suite.workflows[name] = WorkflowDefinitionSpec.model_validate(doc["spec"])
        elif kind == "TaskDefinition":
            suite.task_definitions[name] = TaskDefinitionSpec.model_validate(doc["spec"])
        elif kind == "EventTrigger":
            suite.triggers[name] = EventTriggerSpec.model_validate(doc["spec"])
        elif kind == "WorkflowTest":
            spec = WorkflowTestSpec.model_validate(doc["spec"])
            if ("WorkflowDefinition", spec.workflow_ref.name) not in specs:
                problems.append(
                    f"{file}: WorkflowTest {name!r}: spec.workflowRef.name: WorkflowDefinition "
                    f"{spec.workflow_ref.name!r} not in the files given"
                )
                continue
            suite.tests.append((name, spec))
    if problems:
        raise InvalidFiles("invalid files:\n  " + "\n  ".join(problems))
    if not suite.tests:
        raise InvalidFiles("no WorkflowTest in the files given")
    return suite


def run_suite(suite: Suite, cases: Sequence[str] = ()) -> list[TestResult]:
    """Run every test's cases (only those named in ``cases``, when given)."""
    results: list[TestResult] = []
    for name, test in suite.tests:
        workflow = suite.workflows[test.workflow_ref.name]
        coverage = Coverage(workflow, suite.task_definitions)
        verdicts = []
        for case in test.cases:
            if cases and case.name not in cases:
                continue
            verdict = run_case(
                workflow,
                case,
                suite.task_definitions,
                name=f"{name}-{case.name}",
                triggers=suite.triggers,
            )
            if verdict.run is not None:
                coverage.add(verdict.run)
            verdicts.append(verdict)
        results.append(TestResult(name, test.workflow_ref.name, verdicts, coverage))
    return results


@click.group("test")
def test_command() -> None:
    """Test workflows: run WorkflowTests' cases against mocked tasks."""


@test_command.command("run")
@click.argument("name", required=False)
@click.option(
    "-f",
    "--file",
    "files",
    multiple=True,
    type=click.Path(exists=True, path_type=Path),
    help="A YAML file (or a directory of them) with WorkflowDefinitions, TaskDefinitions "
    "and WorkflowTests; repeatable. Runs the tests locally.",
)
@click.option(
    "-n",
    "--namespace",
    help="With NAME: namespace of the WorkflowTest (default: the kubeconfig's).",
)
@click.option("--case", "cases", multiple=True, help="Run only the case of this name; repeatable.")
@click.option(
    "--junit",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also write the results as JUnit XML to this file.",
)
@click.option("--no-coverage", is_flag=True, help="Do not print coverage.")
@click.option(
    "--timeout",
    type=click.FloatRange(min=1),
    default=900.0,
    show_default=True,
    help="With NAME: longest wait for the run to end, in seconds.",
)
def run_command(
    name: str | None,
    files: tuple[Path, ...],
    namespace: str | None,
    cases: tuple[str, ...],
    junit: Path | None,
    no_coverage: bool,
    timeout: float,
) -> None:
    """Run WorkflowTests: locally (-f FILE...), with no cluster and no database, or the
    WorkflowTest NAME in the cluster (the operator runs each case as a WorkflowInstance;
    needs PLAIT_DATABASE_URL). Exit code 1 when a case fails, 2 when the files are
    invalid or the test is not stored."""
    began = time.perf_counter()
    if (name is None) == (not files):
        raise click.UsageError("give either -f FILE (a local run) or NAME (a run in the cluster)")
    if name is not None:
        if cases:
            raise click.UsageError(
                "--case applies to local runs: a run in the cluster runs every case"
            )
        from plait.kernel.kube import current_namespace

        results = asyncio.run(
            cluster_run(namespace or current_namespace(), name, wait_seconds=timeout)
        )
    else:
        suite = load(files)
        results = run_suite(suite, cases)
    click.echo(render_text(results, coverage=not no_coverage), nl=False)
    click.echo(f"ran in {time.perf_counter() - began:.2f}s")
    if junit is not None:
        junit.write_text(junit_xml(results))
    if any(r.failed for r in results):
        raise SystemExit(1)


class TestNotRun(click.ClickException):
    """The test is not stored, or its run could not start or did not end in time."""

    __test__ = False
    exit_code = INVALID_EXIT


async def cluster_run(
    namespace: str, name: str, *, wait_seconds: float, poll: float = 0.5
) -> list[TestResult]:
    """Request a run of WorkflowTest ``name``, wait for the operator to carry it out, and
    return its results as a local run gives them."""
    from plait.kernel.components import component_by_name
    from plait.kernel.config import Settings
    from plait.kernel.database import Database

    components = [component_by_name("testing_framework")]
    async with await Database.open(Settings(), components) as db:
        async with db.connection("testing_framework") as conn:
            run = await repository.request_test_run(conn, namespace, name, requested_by="cli")
        if run is None:
            raise TestNotRun(
                f"WorkflowTest {namespace}/{name} is not stored: apply it (kubectl apply -f) "
                "and wait until it is Ready"
            )
        click.echo(f"test run {run.id} requested", err=True)
        deadline = time.monotonic() + wait_seconds
        while run.status in (TestRunStatus.PENDING, TestRunStatus.RUNNING):
            if time.monotonic() > deadline:
                raise TestNotRun(
                    f"test run {run.id} did not end within {wait_seconds:g}s "
                    f"(it is {run.status.value}): is the operator running?"
                )
            await asyncio.sleep(poll)
            async with db.connection("testing_framework") as conn:
                found = await repository.get_test_run(conn, run.id)
            assert found is not None
            run = found
        async with db.connection("testing_framework") as conn:
            stored = await repository.results_of(conn, run.id)
            definition = await repository.get_test_definition(
                conn, namespace, name, run.test_version
            )
    assert definition is not None
    if run.status is TestRunStatus.ERROR and not stored:
        raise TestNotRun(f"test run {run.id}: {run.message}")
    order = {c.get("name"): i for i, c in enumerate(definition.spec.get("cases") or ())}
    verdicts = [
        CaseResult.stored(r.case_name, r.outcome, r.details)
        for r in sorted(stored, key=lambda r: order.get(r.case_name, len(order)))
    ]
    workflow = f"{definition.workflow_name} version {run.workflow_version}"
    return [TestResult(name, workflow, verdicts, StoredCoverage(list(run.coverage)), "real")]
