"""A case's verdict (expected against actual, per path), coverage, and reports.

:func:`run_case` simulates a case and compares its run with the case's expectations;
:class:`Coverage` gathers, over a test's cases, which tasks ran and which branches (``when``
and ``depends`` true and false, retries, the exit task after success and failure) they
exercised; :func:`render_text` and :func:`junit_xml` turn results into what a person and a
CI system read.
"""

from __future__ import annotations

import json
import time
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from plait.errors import ValidationError
from plait.kernel import expressions
from plait.resources.foreach import split_item_name
from plait.resources.task import TaskDefinitionSpec
from plait.resources.test import TestCase
from plait.resources.trigger import EventTriggerSpec
from plait.resources.workflow import WorkflowDefinitionSpec
from plait.task_execution.states import TaskState
from plait.testing_framework.local import (
    CaseError,
    RunResult,
    failure_view,
    simulate,
    task_views,
)
from plait.testing_framework.states import CaseOutcome
from plait.workflow_orchestrator.engine import Failure, TaskDefaults, retry_policy

__all__ = [
    "CaseResult",
    "Coverage",
    "Mismatch",
    "StoredCoverage",
    "TestResult",
    "compare",
    "junit_xml",
    "render_text",
    "run_case",
]

#: Shown for a value that is absent (an output never produced, a task never run).
MISSING = "<missing>"


@dataclass(frozen=True)
class Mismatch:
    """One expectation the run did not meet: where, what was expected, what it gave."""

    path: str
    expected: Any
    actual: Any

    def __str__(self) -> str:
        return f"{self.path}: expected {_show(self.expected)}, got {_show(self.actual)}"


@dataclass
class CaseResult:
    """The verdict of one case: Passed, Failed (with its mismatches) or Error (it could
    not run, with why)."""

    case: str
    outcome: CaseOutcome
    mismatches: list[Mismatch] = field(default_factory=list)
    error: str | None = None
    run: RunResult | None = None
    seconds: float = 0.0
    """Wall time of the simulation."""

    def details(self) -> dict[str, Any]:
        """The verdict as JSON: what a stored result keeps."""
        details: dict[str, Any] = {
            "mismatches": [
                {"path": m.path, "expected": m.expected, "actual": m.actual}
                for m in self.mismatches
            ]
        }
        if self.run is not None:
            details["phase"] = self.run.phase
            details["durationSeconds"] = self.run.duration
            if self.run.failure is not None:
                details["failure"] = self.run.failure.message
            if self.run.stuck is not None:
                details["stuck"] = self.run.stuck
        if self.error is not None:
            details["error"] = self.error
        return details

    @classmethod
    def stored(cls, case: str, outcome: CaseOutcome, details: Mapping[str, Any]) -> CaseResult:
        """A verdict as :meth:`details` stored it (what a report of it needs)."""
        run = None
        if "phase" in details:
            failure = details.get("failure")
            run = RunResult(
                phase=str(details["phase"]),
                outputs=None,
                failure=None if failure is None else Failure(None, None, None, str(failure)),
                records=[],
                duration=float(details.get("durationSeconds") or 0.0),
                params={},
                stuck=details.get("stuck"),
            )
        return cls(
            case,
            outcome,
            [
                Mismatch(m["path"], m["expected"], m["actual"])
                for m in details.get("mismatches") or ()
            ],
            error=details.get("error"),
            run=run,
        )


@dataclass
class TestResult:
    """Every case of one WorkflowTest, and the coverage they gave."""

    __test__ = False

    test: str
    workflow: str
    cases: list[CaseResult]
    coverage: Coverage | StoredCoverage
    clock: str = "simulated"
    """How durations were measured: simulated (a local run) or real (a run in the cluster)."""

    @property
    def failed(self) -> int:
        return sum(1 for c in self.cases if c.outcome is not CaseOutcome.PASSED)


def _show(value: Any) -> str:
    if value == MISSING:
        return MISSING
    return json.dumps(value, sort_keys=True, default=str)


def run_case(
    spec: WorkflowDefinitionSpec,
    case: TestCase,
    task_definitions: Mapping[str, TaskDefinitionSpec] | None = None,
    *,
    name: str = "test",
    triggers: Mapping[str, EventTriggerSpec] | None = None,
) -> CaseResult:
    """Simulate ``case`` and judge its run."""
    began = time.perf_counter()
    try:
        run = simulate(spec, case, task_definitions, name=name, triggers=triggers)
    except CaseError as exc:
        return CaseResult(
            case.name, CaseOutcome.ERROR, error=str(exc), seconds=time.perf_counter() - began
        )
    mismatches = compare(spec, case, run)
    return CaseResult(
        case.name,
        CaseOutcome.FAILED if mismatches else CaseOutcome.PASSED,
        mismatches,
        run=run,
        seconds=time.perf_counter() - began,
    )


def compare(spec: WorkflowDefinitionSpec, case: TestCase, run: RunResult) -> list[Mismatch]:
    """Every expectation of ``case`` that ``run`` does not meet, in the order written."""
    expect = case.expect
    found: list[Mismatch] = []
    views = task_views(spec, run.records)
    if expect.phase is not None and expect.phase != run.phase:
        found.append(Mismatch("phase", expect.phase, run.phase))
    if expect.failure is not None:
        actual = failure_view(run.failure) or {}
        wanted = expect.failure
        for key, value in (
            ("task", wanted.task),
            ("attempt", wanted.attempt),
            ("exitCode", wanted.exit_code),
        ):
            if value is not None and actual.get(key) != value:
                found.append(Mismatch(f"failure.{key}", value, actual.get(key, MISSING)))
        if wanted.message_contains is not None and wanted.message_contains not in str(
            actual.get("message", "")
        ):
            found.append(
                Mismatch(
                    "failure.message",
                    f"text containing {wanted.message_contains!r}",
                    actual.get("message", MISSING),
                )
            )
    for key, value in (expect.outputs or {}).items():
        actual_outputs = run.outputs or {}
        got = actual_outputs.get(key, MISSING)
        if got != value:
            found.append(Mismatch(f"outputs.{key}", value, got))
    for name, wanted_task in expect.tasks.items():
        view = views.get(name) or {}
        where = f"tasks.{name}"
        if wanted_task.state is not None and view.get("phase") != wanted_task.state:
            found.append(
                Mismatch(f"{where}.state", wanted_task.state, view.get("phase") or MISSING)
            )
        if wanted_task.attempts is not None and view.get("attempts") != wanted_task.attempts:
            found.append(Mismatch(f"{where}.attempts", wanted_task.attempts, view.get("attempts")))
        outputs = view.get("outputs")
        for key, value in (wanted_task.outputs or {}).items():
            got = outputs.get(key, MISSING) if isinstance(outputs, dict) else MISSING
            if got != value:
                found.append(Mismatch(f"{where}.outputs.{key}", value, got))
        if wanted_task.message_contains is not None and wanted_task.message_contains not in str(
            view.get("message") or ""
        ):
            found.append(
                Mismatch(
                    f"{where}.message",
                    f"text containing {wanted_task.message_contains!r}",
                    view.get("message") or MISSING,
                )
            )
    if expect.order is not None:
        started = run.order()
        actual_order = [t for t in started if t in expect.order]
        if actual_order != list(expect.order):
            found.append(Mismatch("order", list(expect.order), actual_order))
    if expect.max_duration_seconds is not None and run.duration > expect.max_duration_seconds:
        found.append(
            Mismatch(
                "durationSeconds",
                f"at most {expect.max_duration_seconds:g}",
                run.duration,
            )
        )
    activation = {
        "params": dict(run.params),
        "tasks": views,
        "workflow": {
            "phase": run.phase,
            "outputs": dict(run.outputs or {}),
            "failure": failure_view(run.failure) or {},
            "durationSeconds": run.duration,
        },
    }
    for j, assertion in enumerate(expect.assertions):
        try:
            verdict: Any = expressions.evaluate(expressions.compile(assertion), activation)
        except ValidationError as exc:
            verdict = f"error: {exc}"
        if verdict is not True:
            found.append(Mismatch(f"assertions[{j}] {assertion}", True, verdict))
    return found


@dataclass
class StoredCoverage:
    """Coverage as a run stored it: its lines."""

    stored: list[str]

    def lines(self) -> list[str]:
        return list(self.stored)


@dataclass
class Coverage:
    """What a test's cases exercised of its workflow."""

    spec: WorkflowDefinitionSpec
    task_definitions: Mapping[str, TaskDefinitionSpec] = field(default_factory=dict)
    ran: set[str] = field(default_factory=set)
    branches: dict[str, set[bool]] = field(default_factory=dict)
    retried: set[str] = field(default_factory=set)
    exit_after: set[str] = field(default_factory=set)

    def add(self, run: RunResult) -> None:
        """Count one case's run."""
        exit_name = self.spec.on_exit.name if self.spec.on_exit else None
        for record in run.records:
            task = split_item_name(record.task)[0]
            if record.started is not None:
                self.ran.add(task)
                self.branches.setdefault(task, set()).add(True)
                if record.attempt > 1:
                    self.retried.add(task)
            elif record.state is TaskState.SKIPPED and (record.message or "").startswith(
                ("when:", "depends:")
            ):
                self.branches.setdefault(task, set()).add(False)
            if task == exit_name and record.started is not None and record.attempt == 1:
                failed_by_exit = run.failure is not None and run.failure.task == exit_name
                self.exit_after.add("Succeeded" if failed_by_exit else run.phase)

    def lines(self) -> list[str]:
        """The coverage, one aspect a line; what was never exercised is named."""
        every = self.spec.all_tasks()
        names = [t.name for t in every]
        not_run = [n for n in names if n not in self.ran]
        lines = [
            f"tasks run: {len(names) - len(not_run)}/{len(names)}"
            + (f" (never run: {', '.join(not_run)})" if not_run else "")
        ]
        gated = [t for t in every if t.when is not None or t.depends is not None]
        if gated:
            parts = []
            for t in gated:
                seen = self.branches.get(t.name, set())
                missing = [str(b).lower() for b in (True, False) if b not in seen]
                parts.append(t.name + (f" (never {'/'.join(missing)})" if missing else " (both)"))
            lines.append("when/depends branches: " + ", ".join(parts))
        retrying = []
        for t in every:
            defaults = None
            if t.task_ref is not None and t.task_ref.name in self.task_definitions:
                defaults = TaskDefaults.of(t.task_ref.name, self.task_definitions[t.task_ref.name])
            policy = retry_policy(t, defaults)
            if policy is not None and policy.limit > 0:
                retrying.append(t.name + ("" if t.name in self.retried else " (never retried)"))
        if retrying:
            lines.append("retries: " + ", ".join(retrying))
        if self.spec.on_exit is not None:
            after = [p for p in ("Succeeded", "Failed") if p in self.exit_after]
            never = [p for p in ("Succeeded", "Failed") if p not in self.exit_after]
            lines.append(
                f"exit task {self.spec.on_exit.name}: "
                + (f"ran after {', '.join(after)}" if after else "never ran")
                + (f"; never after {', '.join(never)}" if after and never else "")
            )
        return lines


def render_text(results: Sequence[TestResult], *, coverage: bool = True) -> str:
    """What ``plait test run`` prints: each case, its mismatches, each test's coverage."""
    out: list[str] = []
    for result in results:
        out.append(f"WorkflowTest {result.test} (workflow {result.workflow})")
        for case in result.cases:
            if case.outcome is CaseOutcome.ERROR:
                out.append(f"  ERROR {case.case}: {case.error}")
                continue
            run = case.run
            assert run is not None
            label = "PASS " if case.outcome is CaseOutcome.PASSED else "FAIL "
            out.append(f"  {label}{case.case} ({run.phase}, {run.duration:g}s {result.clock})")
            for mismatch in case.mismatches:
                out.append(f"        {mismatch}")
            if case.mismatches and run.failure is not None:
                out.append(f"        (the run failed: {run.failure.message})")
            if case.mismatches and run.stuck is not None:
                out.append(f"        ({run.stuck})")
        if coverage:
            out += [f"  coverage: {line}" for line in result.coverage.lines()]
    total = sum(len(r.cases) for r in results)
    failed = sum(r.failed for r in results)
    noun = "case" if total == 1 else "cases"
    out.append(f"{total} {noun}: {total - failed} passed, {failed} failed")
    return "\n".join(out) + "\n"


def junit_xml(results: Sequence[TestResult]) -> str:
    """JUnit XML: a testsuite per WorkflowTest, a testcase per case (a failure lists the
    mismatches, an error why the case could not run)."""
    root = ET.Element("testsuites")
    for result in results:
        suite = ET.SubElement(
            root,
            "testsuite",
            name=result.test,
            tests=str(len(result.cases)),
            failures=str(sum(1 for c in result.cases if c.outcome is CaseOutcome.FAILED)),
            errors=str(sum(1 for c in result.cases if c.outcome is CaseOutcome.ERROR)),
            time=f"{sum(c.seconds for c in result.cases):.6f}",
        )
        for case in result.cases:
            element = ET.SubElement(
                suite,
                "testcase",
                classname=f"{result.test}.{result.workflow}",
                name=case.case,
                time=f"{case.seconds:.6f}",
            )
            if case.outcome is CaseOutcome.FAILED:
                text = "\n".join(str(m) for m in case.mismatches)
                failure = ET.SubElement(
                    element, "failure", message=str(case.mismatches[0]), type="ExpectationFailed"
                )
                failure.text = text
            elif case.outcome is CaseOutcome.ERROR:
                error = ET.SubElement(
                    element, "error", message=case.error or "", type="CaseCannotRun"
                )
                error.text = case.error
    return ET.tostring(root, encoding="unicode", xml_declaration=True) + "\n"
