"""``plait test run`` on files alone: the examples and Argo's classic shapes pass, and a
deliberately broken variant of each fails with a message that says what went wrong."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from plait.cli import cli
from tests.fixtures.kube import REPO_ROOT

EXAMPLES = REPO_ROOT / "examples"
SHAPES = EXAMPLES / "testing"


def _run(*args: str | Path) -> Result:
    return CliRunner().invoke(cli, ["test", "run", *[str(a) for a in args]])


def test_the_examples_tests_pass() -> None:
    result = _run("-f", EXAMPLES)
    assert result.exit_code == 0, result.output
    assert "7 cases: 7 passed, 0 failed" in result.output
    assert "PASS join-keeps-failing (Failed, 74s simulated)" in result.output


@pytest.mark.parametrize("shape", sorted(p.name for p in SHAPES.glob("*.yaml")))
def test_each_shape_passes(shape: str) -> None:
    result = _run("-f", SHAPES / shape)
    assert result.exit_code == 0, result.output
    assert " 0 failed" in result.output


# (shape file, text of the workflow replaced, its replacement, lines the failure prints)
BROKEN = [
    (
        "diamond.yaml",
        "right: tasks.c.outputs.n",
        "right: tasks.b.outputs.n",
        ["FAIL joins-both-branches", "tasks.d.outputs.seen: expected [2, 3], got [2, 2]"],
    ),
    (
        "retry.yaml",
        "limit: 3",
        "limit: 1",
        [
            "FAIL succeeds-on-the-third-attempt (Failed, 7s simulated)",
            'phase: expected "Succeeded", got "Failed"',
            "tasks.flaky.attempts: expected 3, got 2",
            "(the run failed: task flaky attempt 2 failed with exit code 1: transient)",
        ],
    ),
    (
        "exit-handler.yaml",
        "when: workflow.phase == 'Failed'",
        "when: workflow.phase == 'Succeeded'",
        ['tasks.notify.state: expected "Succeeded", got "Skipped"'],
    ),
    (
        "coinflip.yaml",
        "when: tasks.flip.outputs.result == 'tails'",
        "when: tasks.flip.outputs.result != 'heads' || true",
        ["FAIL heads", 'tasks.tails.state: expected "Skipped", got "Succeeded"'],
    ),
    (
        "outputs.yaml",
        "inputs: {message: tasks.generate.outputs.message}",
        "inputs: {message: params.greeting}",
        ["outputs.length: expected 8, got 2"],
    ),
    (
        "timeout.yaml",
        "timeoutSeconds: 30\n",
        "timeoutSeconds: 60\n",
        [
            "FAIL task-times-out (Succeeded, 45s simulated)",
            'tasks.slow.state: expected "TimedOut", got "Succeeded"',
            'durationSeconds: expected "at most 30", got 45.0',
        ],
    ),
    (
        "wait-for-event.yaml",
        "correlation: event.data.order == params.order",
        "correlation: event.data.id == params.order",
        [
            "FAIL approved-after-two-minutes (Failed, 3600s simulated)",
            'tasks.approval.state: expected "Succeeded", got "TimedOut"',
            "no matching event of type com.example.order.approved within 3600s",
        ],
    ),
]


@pytest.mark.parametrize(("shape", "old", "new", "lines"), BROKEN)
def test_a_broken_shape_fails_with_a_clear_message(
    tmp_path: Path, shape: str, old: str, new: str, lines: list[str]
) -> None:
    text = (SHAPES / shape).read_text()
    assert old in text
    broken = tmp_path / shape
    broken.write_text(text.replace(old, new, 1))
    result = _run("-f", broken, "--junit", tmp_path / "junit.xml")
    for line in lines:
        assert line in result.output, result.output
    assert result.exit_code == 1, result.output
    suite = ET.parse(tmp_path / "junit.xml").getroot().find("testsuite")
    assert suite is not None
    assert int(suite.get("failures", "0")) >= 1
    messages = [f.get("message", "") for f in suite.iter("failure")]
    assert any(lines[-1] in m or m in result.output for m in messages)


def test_the_junit_report_lists_every_case(tmp_path: Path) -> None:
    result = _run("-f", EXAMPLES, "--junit", tmp_path / "out.xml")
    assert result.exit_code == 0, result.output
    root = ET.parse(tmp_path / "out.xml").getroot()
    suites = {s.get("name"): s for s in root.iter("testsuite")}
    assert sorted(str(name) for name in suites) == ["diamond", "fanout", "report"]
    names = [c.get("name") for c in suites["diamond"].iter("testcase")]
    assert names == ["both-halves", "empty-tail", "join-keeps-failing", "started-by-a-large-order"]
    assert all(s.get("failures") == "0" and s.get("errors") == "0" for s in suites.values())


def test_a_task_without_a_mock_is_an_error_that_names_it(tmp_path: Path) -> None:
    text = (SHAPES / "coinflip.yaml").read_text().replace("        tails: {}\n", "", 1)
    (tmp_path / "t.yaml").write_text(text)
    result = _run("-f", tmp_path / "t.yaml")
    assert result.exit_code == 0, result.output  # tails is skipped in the heads case
    assert "PASS heads" in result.output
    text = (SHAPES / "coinflip.yaml").read_text().replace("        heads: {}\n", "", 1)
    (tmp_path / "t.yaml").write_text(text)
    result = _run("-f", tmp_path / "t.yaml")
    assert result.exit_code == 1
    assert (
        "ERROR heads: task heads has no mock, and a local run cannot start a container: "
        "mock it (mocks: {heads: {}} succeeds with no outputs)"
    ) in result.output


def test_invalid_files_are_refused_with_exit_code_2(tmp_path: Path) -> None:
    text = (SHAPES / "retry.yaml").read_text()
    (tmp_path / "a.yaml").write_text(
        text.replace("        flaky: {exitCode: 2", "        flakey: {exitCode: 2")
    )
    result = _run("-f", tmp_path / "a.yaml")
    assert result.exit_code == 2
    assert (
        "WorkflowTest 'shape-retry': spec.cases[1].mocks.flakey: mocks task 'flakey', which "
        "is not a task of WorkflowDefinition 'shape-retry' (tasks: flaky)"
    ) in result.output
    test_only = text.split("---\n", 1)[1]
    (tmp_path / "b.yaml").write_text(test_only)
    result = _run("-f", tmp_path / "b.yaml")
    assert result.exit_code == 2
    assert (
        "WorkflowTest 'shape-retry': spec.workflowRef.name: WorkflowDefinition 'shape-retry' "
        "not found in the files given"
    ) in result.output


def test_coverage_names_the_paths_no_case_took(tmp_path: Path) -> None:
    text = (SHAPES / "coinflip.yaml").read_text()
    only_heads = text.rsplit("    - name: tails\n", 1)[0]
    (tmp_path / "c.yaml").write_text(only_heads)
    result = _run("-f", tmp_path / "c.yaml")
    assert result.exit_code == 0, result.output
    assert "coverage: tasks run: 2/3 (never run: tails)" in result.output
    assert "coverage: when/depends branches: heads (never false), tails (never true)" in (
        result.output
    )
    result = _run("-f", SHAPES / "exit-handler.yaml")
    assert "coverage: exit task notify: ran after Failed; never after Succeeded" in result.output
    result = _run("-f", SHAPES / "retry.yaml")
    assert "coverage: retries: flaky\n" in result.output


def test_objects_of_other_api_groups_beside_the_workflows_are_skipped(tmp_path: Path) -> None:
    text = (SHAPES / "outputs.yaml").read_text()
    config_map = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: settings}\ndata: {a: b}\n"
    (tmp_path / "all.yaml").write_text(config_map + "---\n" + text)
    result = _run("-f", tmp_path)
    assert result.exit_code == 0, result.output
    assert "1 case: 1 passed, 0 failed" in result.output


def test_a_case_started_by_a_trigger_gets_the_triggers_arguments(tmp_path: Path) -> None:
    for path in EXAMPLES.glob("*.yaml"):
        (tmp_path / path.name).write_text(path.read_text())
    result = _run("-f", tmp_path, "--case", "started-by-a-large-order")
    assert result.exit_code == 0, result.output
    assert "PASS started-by-a-large-order" in result.output  # params.message == 'order A-17'
    test = tmp_path / "workflowtest.yaml"
    test.write_text(test.read_text().replace("amount: 250", "amount: 50"))
    result = _run("-f", tmp_path, "--case", "started-by-a-large-order")
    assert result.exit_code == 1
    assert (
        "ERROR started-by-a-large-order: the event does not pass the filter of EventTrigger "
        "on-large-order ('event.data.amount > 100'): it would start no run"
    ) in result.output
    test.write_text(test.read_text().replace("eventTrigger: on-large-order", "eventTrigger: nope"))
    result = _run("-f", tmp_path)
    assert result.exit_code == 2
    assert (
        "spec.cases[3].trigger.eventTrigger: EventTrigger 'nope' not found in the files given"
    ) in result.output
