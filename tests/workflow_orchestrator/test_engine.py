"""The engine's plans, on definitions and attempt histories built in memory."""

from __future__ import annotations

import datetime as dt
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from plait.resources.task import TaskDefinitionSpec
from plait.resources.workflow import WorkflowDefinitionSpec
from plait.task_execution.states import FailureCause, TaskState
from plait.workflow_orchestrator.engine import (
    MAX_KEPT_ACTIVATION,
    Attempt,
    Launch,
    Plan,
    TaskDefaults,
    _kept_fan_out_list,
    attempt_names,
    backoff_seconds,
    plan,
)
from plait.workflow_orchestrator.states import WorkflowPhase

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
IMAGE = {"image": "busybox"}


def definition(*tasks: dict[str, Any], **extra: Any) -> WorkflowDefinitionSpec:
    return WorkflowDefinitionSpec.model_validate(
        {"tasks": [{"template": IMAGE, **t} for t in tasks], **extra}
    )


DIAMOND = definition(
    {"name": "a", "inputs": {"n": "params.n * 2"}},
    {"name": "b", "dependencies": ["a"], "inputs": {"x": "tasks.a.outputs.x + 1"}},
    {"name": "c", "dependencies": ["a"]},
    {"name": "d", "dependencies": ["b", "c"]},
    parameters=[{"name": "n", "type": "integer", "default": 1}],
    outputs={"total": "tasks.b.outputs.y"},
)


def done(task: str, attempt: int = 1, state: TaskState = TaskState.SUCCEEDED, **kw: Any) -> Attempt:
    return Attempt(task, attempt, state, finished_at=kw.pop("at", T0), **kw)


def names(p: Plan) -> list[str]:
    return [launch.task for launch in p.launches]


def test_a_diamond_runs_level_by_level_with_data_flowing_down() -> None:
    first = plan(DIAMOND, {"n": 5}, [], now=T0)
    assert first.launches == [Launch("a", 1, {"n": 10})]
    assert first.phase is None
    running = plan(DIAMOND, {}, [Attempt("a", 1, TaskState.RUNNING)], now=T0)
    assert running == Plan()
    history = [done("a", outputs={"x": 41})]
    second = plan(DIAMOND, {}, history, now=T0)
    assert second.launches == [Launch("b", 1, {"x": 42}), Launch("c", 1, {})]
    history += [done("b", outputs={"y": "B"}), done("c")]
    assert names(plan(DIAMOND, {}, history, now=T0)) == ["d"]
    history.append(done("d"))
    final = plan(DIAMOND, {}, history, now=T0)
    assert (final.phase, final.outputs, final.failure) == (
        WorkflowPhase.SUCCEEDED,
        {"total": "B"},
        None,
    )


def test_when_false_skips_the_task_and_its_dependents_still_run() -> None:
    spec = definition(
        {"name": "a"},
        {"name": "b", "dependencies": ["a"], "when": "params.deploy"},
        {"name": "c", "dependencies": ["b"]},
        parameters=[{"name": "deploy", "type": "boolean", "default": False}],
    )
    p = plan(spec, {}, [done("a")], now=T0)
    assert p.launches == []
    assert [(s.task, s.reason, s.failed) for s in p.skips] == [
        ("b", "when: 'params.deploy' is false", False)
    ]
    p = plan(spec, {}, [done("a"), done("b", state=TaskState.SKIPPED)], now=T0)
    assert names(p) == ["c"]
    assert names(plan(spec, {"deploy": True}, [done("a")], now=T0)) == ["b"]


def test_a_failure_skips_what_depends_on_it_and_fails_the_run_with_its_reason() -> None:
    history = [
        done("a"),
        done(
            "b",
            state=TaskState.FAILED,
            exit_code=3,
            message="disk full",
            at=T0 + dt.timedelta(seconds=5),
        ),
    ]
    p = plan(DIAMOND, {}, history, now=T0)
    assert names(p) == ["c"]
    assert [(s.task, s.reason) for s in p.skips] == [("d", "upstream task b did not succeed")]
    history += [done("c"), done("d", state=TaskState.SKIPPED)]
    final = plan(DIAMOND, {}, history, now=T0)
    assert final.phase is WorkflowPhase.FAILED
    assert final.failure is not None
    assert final.failure.as_status() == {
        "task": "b",
        "attempt": 1,
        "exitCode": 3,
        "message": "task b attempt 1 failed with exit code 3: disk full",
    }


def test_retries_wait_for_the_backoff_then_start_the_next_attempt() -> None:
    spec = definition(
        {
            "name": "a",
            "retries": {
                "limit": 2,
                "backoff": {"initialSeconds": 10, "factor": 3, "maxSeconds": 20},
            },
        }
    )
    failed_once = [done("a", state=TaskState.FAILED, exit_code=1)]
    early = plan(spec, {}, failed_once, now=T0 + dt.timedelta(seconds=9))
    assert (early.launches, early.retry_at, early.phase) == (
        [],
        T0 + dt.timedelta(seconds=10),
        None,
    )
    assert plan(spec, {}, failed_once, now=T0 + dt.timedelta(seconds=10)).launches == [
        Launch("a", 2, {})
    ]
    failed_twice = [*failed_once, done("a", 2, TaskState.TIMED_OUT)]
    assert plan(spec, {}, failed_twice, now=T0 + dt.timedelta(seconds=19)).retry_at == (
        T0 + dt.timedelta(seconds=20)
    )  # 10 * 3 = 30, capped at 20
    failed_thrice = [*failed_twice, done("a", 3, TaskState.FAILED, exit_code=1)]
    final = plan(spec, {}, failed_thrice, now=T0 + dt.timedelta(hours=1))
    assert final.phase is WorkflowPhase.FAILED
    assert final.failure is not None
    assert final.failure.attempt == 3
    assert backoff_seconds(None, 1) == 10.0


NOW = T0 + dt.timedelta(hours=1)  # past any backoff below


def retried(retry_on: str | None, attempt: Attempt) -> bool:
    """Whether a task with this retryOn starts attempt 2 after ``attempt``."""
    policy: dict[str, Any] = {"limit": 1}
    if retry_on is not None:
        policy["retryOn"] = retry_on
    spec = definition({"name": "a", "retries": policy})
    return plan(spec, {}, [attempt], now=NOW).launches == [Launch("a", 2, {})]


def test_retry_on_tells_the_tasks_own_failure_from_an_error_around_it() -> None:
    exited = done("a", state=TaskState.FAILED, exit_code=3, cause=FailureCause.FAILURE)
    timed_out = done("a", state=TaskState.TIMED_OUT, cause=FailureCause.FAILURE)
    evicted = done("a", state=TaskState.FAILED, cause=FailureCause.ERROR)
    invalid = done("a", state=TaskState.FAILED, cause=FailureCause.INVALID)
    table = {
        None: (True, True, False, False),  # OnFailure is the default
        "OnFailure": (True, True, False, False),
        "OnError": (False, False, True, False),
        "Always": (True, True, True, False),
    }
    for retry_on, expected in table.items():
        got = tuple(retried(retry_on, a) for a in (exited, timed_out, evicted, invalid))
        assert got == expected, retry_on


def test_an_attempt_recorded_without_a_cause_is_judged_by_its_state_and_exit_code() -> None:
    assert retried("OnFailure", done("a", state=TaskState.FAILED, exit_code=1))
    assert retried("OnFailure", done("a", state=TaskState.TIMED_OUT))
    assert not retried("OnFailure", done("a", state=TaskState.FAILED))
    assert retried("OnError", done("a", state=TaskState.FAILED))


REFERENCING = WorkflowDefinitionSpec.model_validate(
    {
        "tasks": [
            {"name": "a", "taskRef": {"name": "greet"}, "inputs": {"who": "'ops'"}},
            {
                "name": "b",
                "taskRef": {"name": "greet"},
                "inputs": {"who": "'dev'", "greeting": "'hi'"},
                "retries": {"limit": 0},
            },
        ]
    }
)
GREET = TaskDefaults.of(
    "greet",
    TaskDefinitionSpec.model_validate(
        {
            "template": IMAGE,
            "inputs": [{"name": "who"}, {"name": "greeting", "default": "hello"}],
            "retries": {"limit": 2, "retryOn": "Always", "backoff": {"initialSeconds": 0}},
            "timeoutSeconds": 30,
        }
    ),
)


def test_a_task_definition_gives_its_input_defaults_and_the_tasks_own_inputs_win() -> None:
    p = plan(REFERENCING, {}, [], now=T0, task_defaults={"a": GREET, "b": GREET})
    assert p.launches == [
        Launch("a", 1, {"who": "ops", "greeting": "hello"}),
        Launch("b", 1, {"who": "dev", "greeting": "hi"}),
    ]


def test_a_task_definition_gives_its_retry_policy_unless_the_task_has_one() -> None:
    evicted = [
        done("a", state=TaskState.FAILED, cause=FailureCause.ERROR),
        done("b", state=TaskState.FAILED, cause=FailureCause.ERROR),
    ]
    p = plan(REFERENCING, {}, evicted, now=NOW, task_defaults={"a": GREET, "b": GREET})
    assert names(p) == ["a"]  # b's own policy (limit 0) wins over the definition's
    without = plan(REFERENCING, {}, evicted, now=NOW)
    assert (names(without), without.phase) == ([], WorkflowPhase.FAILED)


def test_a_required_input_that_no_task_gives_fails_the_task_before_it_starts() -> None:
    required = TaskDefaults("greet", required=frozenset({"who", "lang"}))
    spec = definition({"name": "a", "inputs": {"who": "'x'"}})
    p = plan(spec, {}, [], now=T0, task_defaults={"a": required})
    assert p.launches == []
    assert [(s.task, s.failed) for s in p.skips] == [("a", True)]
    assert p.skips[0].reason == (
        "cannot start: TaskDefinition 'greet' requires input 'lang', which the task does not give"
    )


def test_the_exit_task_is_retried_by_its_own_policy() -> None:
    spec = definition(
        {"name": "a"},
        onExit={
            "name": "notify",
            "template": IMAGE,
            "retries": {"limit": 1, "backoff": {"initialSeconds": 10}},
        },
    )
    failed_once = [done("a"), done("notify", state=TaskState.FAILED, exit_code=1)]
    early = plan(spec, {}, failed_once, now=T0 + dt.timedelta(seconds=5))
    assert (early.launches, early.retry_at, early.phase) == (
        [],
        T0 + dt.timedelta(seconds=10),
        None,
    )
    due = plan(spec, {}, failed_once, now=T0 + dt.timedelta(seconds=10))
    assert due.launches == [Launch("notify", 2, {})]
    assert plan(spec, {}, failed_once, now=NOW, suspended=True) == Plan()
    twice = [*failed_once, done("notify", 2, TaskState.FAILED, exit_code=1, message="boom")]
    final = plan(spec, {}, twice, now=NOW)
    assert final.phase is WorkflowPhase.FAILED
    assert final.failure is not None
    assert (final.failure.task, final.failure.attempt) == ("notify", 2)
    recovered = plan(spec, {}, [*failed_once, done("notify", 2)], now=NOW)
    assert recovered.phase is WorkflowPhase.SUCCEEDED


def test_parallelism_caps_running_attempts_and_suspension_starts_nothing() -> None:
    spec = definition(*({"name": f"t{i}"} for i in range(5)), parallelism=2)
    assert names(plan(spec, {}, [], now=T0)) == ["t0", "t1"]
    running = [Attempt("t0", 1, TaskState.RUNNING), done("t1")]
    assert names(plan(spec, {}, running, now=T0)) == ["t2"]
    assert plan(spec, {}, [], now=T0, suspended=True) == Plan()


def test_an_expression_that_cannot_be_evaluated_fails_the_task() -> None:
    spec = definition({"name": "a", "inputs": {"x": "params.missing + 1"}})
    p = plan(spec, {}, [], now=T0)
    assert p.launches == []
    assert len(p.skips) == 1
    assert p.skips[0].failed
    assert "missing" in p.skips[0].reason


def test_outputs_that_cannot_be_evaluated_fail_the_run() -> None:
    spec = definition({"name": "a"}, outputs={"x": "tasks.a.outputs.nothing"})
    final = plan(spec, {}, [done("a", outputs={})], now=T0)
    assert final.phase is WorkflowPhase.FAILED
    assert final.failure is not None
    assert final.failure.message.startswith("workflow outputs:")


def test_the_exit_task_runs_last_sees_the_phase_and_its_failure_counts() -> None:
    spec = definition(
        {"name": "a"},
        onExit={"name": "notify", "template": IMAGE, "inputs": {"phase": "workflow.phase"}},
    )
    failed = [done("a", state=TaskState.FAILED, exit_code=2)]
    p = plan(spec, {}, failed, now=T0)
    assert p.launches == [Launch("notify", 1, {"phase": "Failed"})]
    assert p.phase is None
    final = plan(spec, {}, [*failed, done("notify")], now=T0)
    assert final.phase is WorkflowPhase.FAILED
    assert final.failure is not None
    assert final.failure.task == "a"
    ok_then_exit_fails = [done("a"), done("notify", state=TaskState.FAILED, message="boom")]
    final = plan(spec, {}, ok_then_exit_fails, now=T0)
    assert final.phase is WorkflowPhase.FAILED
    assert final.failure is not None
    assert final.failure.task == "notify"


def test_past_the_deadline_the_run_fails() -> None:
    spec = definition({"name": "a"}, timeoutSeconds=60)
    p = plan(
        spec,
        {},
        [Attempt("a", 1, TaskState.RUNNING)],
        now=T0,
        deadline=T0 - dt.timedelta(seconds=1),
    )
    assert p.phase is WorkflowPhase.FAILED
    assert p.failure is not None
    assert p.failure.message == "the workflow timed out after 60s"


@st.composite
def runs(draw: st.DrawFn) -> tuple[WorkflowDefinitionSpec, dict[tuple[str, int], bool]]:
    n = draw(st.integers(1, 8))
    tasks = []
    for i in range(n):
        deps = draw(st.lists(st.integers(0, i - 1), max_size=3, unique=True)) if i else []
        tasks.append(
            {
                "name": f"t{i}",
                "dependencies": [f"t{d}" for d in deps],
                "retries": {"limit": draw(st.integers(0, 2)), "backoff": {"initialSeconds": 0}},
            }
        )
    outcomes = draw(
        st.dictionaries(
            st.tuples(st.sampled_from([f"t{i}" for i in range(n)]), st.integers(1, 3)),
            st.booleans(),
        )
    )
    return definition(*tasks, parallelism=draw(st.integers(1, 4))), outcomes


@settings(max_examples=200, deadline=None)
@given(runs())
def test_any_run_terminates_respecting_dependencies_retries_and_parallelism(
    run: tuple[WorkflowDefinitionSpec, dict[tuple[str, int], bool]],
) -> None:
    spec, outcomes = run
    deps = {t.name: set(t.dependencies) for t in spec.tasks}
    limits = {t.name: t.retries.limit if t.retries else 0 for t in spec.tasks}
    history: list[Attempt] = []
    for _ in range(200):
        p = plan(spec, {}, history, now=T0)
        if p.phase is not None:
            break
        assert p.launches or p.skips, "a run that is not over must have something to do"
        assert len(p.launches) <= (spec.parallelism or 99)
        for skip in p.skips:
            history.append(done(skip.task, state=TaskState.SKIPPED))
        for launch in p.launches:
            succeeded = {a.task for a in history if a.state is TaskState.SUCCEEDED}
            skipped = {a.task for a in history if a.state is TaskState.SKIPPED}
            assert deps[launch.task] <= succeeded | skipped
            assert launch.attempt <= limits[launch.task] + 1
            ok = outcomes.get((launch.task, launch.attempt), True)
            history.append(
                done(
                    launch.task,
                    launch.attempt,
                    TaskState.SUCCEEDED if ok else TaskState.FAILED,
                    exit_code=0 if ok else 1,
                )
            )
    else:
        raise AssertionError("the run never ended")
    gave_up = {
        t
        for t in deps
        if not any(
            a.task == t and a.state in (TaskState.SUCCEEDED, TaskState.SKIPPED) for a in history
        )
    }
    failed_for_good = {a.task for a in history if a.state is TaskState.FAILED} - {
        a.task for a in history if a.state is TaskState.SUCCEEDED
    }
    assert gave_up == failed_for_good
    assert (p.phase is WorkflowPhase.SUCCEEDED) == (not failed_for_good)


def test_after_a_retry_of_the_run_numbering_goes_on_and_the_limit_counts_afresh() -> None:
    spec = definition(
        {"name": "a", "retries": {"limit": 1, "backoff": {"initialSeconds": 0}}},
        {"name": "b", "dependencies": ["a"]},
    )
    # Attempts 1 and 2 of "a" failed and were superseded by a retry of the run.
    first = plan(spec, {}, [], now=T0, attempt_base={"a": 2, "b": 1})
    assert first.launches == [Launch("a", 3, {})]
    failed = [done("a", 3, TaskState.FAILED, exit_code=1)]
    again = plan(spec, {}, failed, now=T0, attempt_base={"a": 2})
    assert again.launches == [Launch("a", 4, {})]  # limit 1: one more, counted afresh
    over = [*failed, done("a", 4, TaskState.FAILED, exit_code=1)]
    assert plan(spec, {}, over, now=T0, attempt_base={"a": 2}).skips[0].task == "b"
    ok = plan(spec, {}, [done("a", 3)], now=T0, attempt_base={"a": 2, "b": 1})
    assert ok.launches == [Launch("b", 2, {})]


WAITING_FLOW = WorkflowDefinitionSpec.model_validate(
    {
        "parameters": [{"name": "orderId", "type": "string"}],
        "tasks": [
            {"name": "a", "template": IMAGE},
            {
                "name": "wait",
                "dependencies": ["a"],
                "inputs": {"order": "params.orderId"},
                "waitForEvent": {
                    "eventType": "order.paid",
                    "correlation": "event.subject == params.orderId",
                    "timeoutSeconds": 5,
                },
                "retries": {"limit": 1, "backoff": {"initialSeconds": 0}},
            },
            {
                "name": "b",
                "dependencies": ["wait"],
                "template": IMAGE,
                "inputs": {"amount": "tasks.wait.outputs.amount"},
            },
        ],
    }
)


def test_a_wait_task_is_launched_with_what_its_correlation_reads() -> None:
    history = [done("a", outputs={"x": 1})]
    launch = plan(WAITING_FLOW, {"orderId": "o-1"}, history, now=T0).launches
    assert launch == [
        Launch(
            "wait",
            1,
            {"order": "o-1"},
            wait_bindings={
                "params": {"orderId": "o-1"},
                "tasks": {"a": {"phase": "Succeeded", "outputs": {"x": 1}}},
            },
        )
    ]
    # Container tasks carry no bindings.
    assert plan(WAITING_FLOW, {"orderId": "o-1"}, [], now=T0).launches == [Launch("a", 1, {})]


def test_a_waiting_task_holds_its_dependents_and_its_outputs_flow_down() -> None:
    history = [done("a"), Attempt("wait", 1, TaskState.WAITING)]
    assert plan(WAITING_FLOW, {"orderId": "o-1"}, history, now=T0) == Plan()
    history[1] = done("wait", outputs={"amount": 42})
    assert plan(WAITING_FLOW, {"orderId": "o-1"}, history, now=T0).launches == [
        Launch("b", 1, {"amount": 42})
    ]


def test_a_timed_out_wait_is_retried_by_policy_then_fails_the_run() -> None:
    message = "no matching event of type order.paid within 5s"
    history = [done("a"), done("wait", state=TaskState.TIMED_OUT, message=message)]
    retry = plan(WAITING_FLOW, {"orderId": "o-1"}, history, now=T0)
    assert [(launch.task, launch.attempt) for launch in retry.launches] == [("wait", 2)]
    assert retry.launches[0].wait_bindings is not None
    history.append(done("wait", 2, state=TaskState.TIMED_OUT, message=message))
    assert [s.task for s in plan(WAITING_FLOW, {}, history, now=T0).skips] == ["b"]
    history.append(done("b", state=TaskState.SKIPPED))
    final = plan(WAITING_FLOW, {"orderId": "o-1"}, history, now=T0)
    assert final.phase is WorkflowPhase.FAILED
    assert final.failure is not None
    assert final.failure.message == f"task wait attempt 2 timed out: {message}"


# -- fan-out (forEach) ---------------------------------------------------------------------


def fan_out(for_each: dict[str, Any], **task: Any) -> WorkflowDefinitionSpec:
    return definition(
        {"name": "list"},
        {
            "name": "each",
            "dependencies": ["list"],
            "forEach": for_each,
            "inputs": {"value": "item", "position": "index"},
            **task,
        },
        {"name": "sum", "dependencies": ["each"], "inputs": {"all": "tasks.each.outputs"}},
    )


def test_a_fan_out_runs_each_item_and_hands_the_outputs_down_in_item_order() -> None:
    spec = fan_out({"expression": "tasks.list.outputs.files", "parallelism": 2})
    history = [done("list", outputs={"files": ["a", "b", "c"]})]
    first = plan(spec, {}, history, now=T0)
    assert first.launches == [
        Launch("each[0]", 1, {"value": "a", "position": 0}),
        Launch("each[1]", 1, {"value": "b", "position": 1}),
    ]
    assert first.fan_outs == {"each": 3}
    history += [Attempt("each[0]", 1, TaskState.RUNNING), done("each[1]", outputs={"n": 1})]
    assert names(plan(spec, {}, history, now=T0)) == ["each[2]"]  # one running: one more
    history[1] = done("each[0]", outputs={"n": 0})  # it was running: now it is done
    history.append(done("each[2]", outputs={"n": 2}))
    p = plan(spec, {}, history, now=T0)
    assert p.launches == [Launch("sum", 1, {"all": [{"n": 0}, {"n": 1}, {"n": 2}]})]
    history.append(done("sum"))
    final = plan(spec, {}, history, now=T0)
    assert final.phase is WorkflowPhase.SUCCEEDED
    assert attempt_names(spec, final.fan_outs) == ["list", "each[0]", "each[1]", "each[2]", "sum"]


def test_a_fan_outs_list_is_the_one_its_outputs_give_though_lists_are_kept() -> None:
    """Plans keep the lists they evaluated lately: one planned with other outputs, or
    whose launches' inputs were changed after, is not what the next plan sees."""
    spec = fan_out({"expression": "tasks.list.outputs.files"})
    first = [done("list", outputs={"files": [{"name": "a"}, {"name": "b"}]})]
    other = [done("list", outputs={"files": [{"name": "x"}]})]
    p = plan(spec, {}, first, now=T0)
    assert p.fan_outs == {"each": 2}
    p.launches[0].inputs["value"]["name"] = "changed by a caller"
    assert plan(spec, {}, other, now=T0).launches == [
        Launch("each[0]", 1, {"value": {"name": "x"}, "position": 0})
    ]
    again = plan(spec, {}, first, now=T0)
    assert [launch.inputs["value"] for launch in again.launches] == [{"name": "a"}, {"name": "b"}]


def test_a_fan_out_planned_from_large_upstream_outputs_keeps_nothing_of_them() -> None:
    """Lists are kept only for small activations: the upstream outputs of a big run are
    not held between plans (and the list is still the one they give)."""
    spec = fan_out({"expression": "tasks.list.outputs.files"})
    big = {"files": ["x" * 100] * 3, "padding": ["y" * 1000] * (MAX_KEPT_ACTIVATION // 1000)}
    calls = _kept_fan_out_list.cache_info()
    p = plan(spec, {}, [done("list", outputs=big)], now=T0)
    assert p.fan_outs == {"each": 3}
    after = _kept_fan_out_list.cache_info()
    assert (after.hits, after.misses) == (calls.hits, calls.misses), "not looked up, not kept"


def test_a_list_that_cannot_be_had_fails_the_fan_out_as_one_task() -> None:
    spec = fan_out({"expression": "tasks.list.outputs.files"})
    for outputs, why in [
        ({"files": "a,b"}, "gave a str, not a list"),
        ({}, "forEach:"),
        ({"files": list(range(10001))}, "gave 10001 items, more than the limit of 10000"),
    ]:
        p = plan(spec, {}, [done("list", outputs=outputs)], now=T0)
        assert [(s.task, s.failed) for s in p.skips] == [("each", True)]
        assert why in p.skips[0].reason
    recorded = [done("list"), done("each", state=TaskState.FAILED, cause=FailureCause.INVALID)]
    p = plan(spec, {}, recorded, now=T0)
    assert [(s.task, s.reason) for s in p.skips] == [("sum", "upstream task each did not succeed")]


def test_stop_starts_no_item_after_the_first_failure_and_fails_naming_it() -> None:
    spec = fan_out({"items": [1, 2, 3, 4], "parallelism": 2})
    history = [
        done("list"),
        done("each[0]", state=TaskState.FAILED, exit_code=9, message="bad item"),
        Attempt("each[1]", 1, TaskState.RUNNING),
    ]
    p = plan(spec, {}, history, now=T0)
    assert p.launches == []
    assert [(s.task, s.reason) for s in p.skips] == [
        ("each[2]", "not started: each[0] failed"),
        ("each[3]", "not started: each[0] failed"),
    ]
    history[2] = done("each[1]")  # it was running: now it is done
    history += [done(f"each[{i}]", state=TaskState.SKIPPED) for i in (2, 3)]
    p = plan(spec, {}, history, now=T0)
    assert [s.task for s in p.skips] == ["sum"]
    history.append(done("sum", state=TaskState.SKIPPED))
    final = plan(spec, {}, history, now=T0)
    assert final.phase is WorkflowPhase.FAILED
    assert final.failure is not None
    assert final.failure.message == "task each[0] attempt 1 failed with exit code 9: bad item"


def test_continue_runs_every_item_and_succeeds_at_the_ratio() -> None:
    items = list(range(10))
    spec = fan_out({"items": items, "failurePolicy": "Continue", "minSuccessRatio": 0.8})
    ok = [done("list")] + [done(f"each[{i}]", outputs={"i": i}) for i in range(8)]
    two_failed = [*ok, *(done(f"each[{i}]", state=TaskState.FAILED, exit_code=1) for i in (8, 9))]
    p = plan(spec, {}, two_failed, now=T0)
    assert names(p) == ["sum"]
    assert p.launches[0].inputs["all"] == [{"i": i} for i in range(8)] + [None, None]
    seven = [*ok[:-1], done("each[7]", state=TaskState.FAILED, exit_code=1), *two_failed[-2:]]
    p = plan(spec, {}, seven, now=T0)
    assert [s.task for s in p.skips] == ["sum"]
    final = plan(spec, {}, [*seven, done("sum", state=TaskState.SKIPPED)], now=T0)
    assert final.failure is not None
    assert final.failure.message.startswith(
        "task each attempt 1 failed: 3 of 10 items failed (each[7], each[8], each[9]); "
        "minSuccessRatio is 0.8"
    )


def test_each_item_has_its_own_retries_and_when() -> None:
    spec = fan_out(
        {"items": [1, 2, 3]},
        when="item != 2",
        retries={"limit": 1, "backoff": {"initialSeconds": 10}},
    )
    p = plan(spec, {}, [done("list")], now=T0)
    assert names(p) == ["each[0]", "each[2]"]
    assert [(s.task, s.failed) for s in p.skips] == [("each[1]", False)]
    history = [
        done("list"),
        done("each[0]", state=TaskState.FAILED, exit_code=1),
        done("each[1]", state=TaskState.SKIPPED),
        done("each[2]"),
    ]
    early = plan(spec, {}, history, now=T0 + dt.timedelta(seconds=1))
    assert (early.launches, early.retry_at) == ([], T0 + dt.timedelta(seconds=10))
    due = plan(spec, {}, history, now=NOW)
    assert due.launches == [Launch("each[0]", 2, {"value": 1, "position": 0})]
    history.append(done("each[0]", 2))
    assert names(plan(spec, {}, history, now=NOW)) == ["sum"]


def test_an_empty_list_succeeds_at_once_and_suspension_starts_no_item() -> None:
    spec = fan_out({"expression": "params.regions"}, dependencies=[])
    spec = WorkflowDefinitionSpec.model_validate(
        {
            **spec.model_dump(by_alias=True, exclude_none=True),
            "parameters": [{"name": "regions", "type": "array"}],
        }
    )
    empty = plan(spec, {"regions": []}, [done("list")], now=T0)
    assert (names(empty), empty.fan_outs) == (["sum"], {"each": 0})
    assert empty.launches[0].inputs == {"all": []}
    held = plan(spec, {"regions": ["eu"]}, [done("list")], now=T0, suspended=True)
    assert (held.launches, held.fan_outs) == ([], {"each": 1})


def test_a_lone_fan_out_is_bounded_by_its_own_parallelism_only() -> None:
    spec = definition({"name": "each", "forEach": {"items": list(range(10)), "parallelism": 4}})
    assert names(plan(spec, {}, [], now=T0)) == [f"each[{i}]" for i in range(4)]
    unbounded = definition({"name": "each", "forEach": {"items": list(range(10))}})
    assert len(plan(unbounded, {}, [], now=T0).launches) == 10
    capped = definition({"name": "each", "forEach": {"items": list(range(10))}}, parallelism=3)
    assert len(plan(capped, {}, [], now=T0).launches) == 3


def test_after_a_retry_of_the_run_only_the_items_set_aside_run_again() -> None:
    spec = definition({"name": "each", "forEach": {"items": ["a", "b", "c"]}})
    # Item 1 failed and was set aside by a retry of the run; items 0 and 2 had succeeded.
    kept = [done("each[0]"), done("each[2]")]
    p = plan(spec, {}, kept, now=T0, attempt_base={"each[1]": 1})
    assert p.launches == [Launch("each[1]", 2, {})]
    assert plan(spec, {}, [*kept, done("each[1]", 2)], now=T0).phase is WorkflowPhase.SUCCEEDED


# -- dependency conditions (depends) ----------------------------------------------------------


HANDLER = definition(
    {"name": "build", "retries": {"limit": 1, "backoff": {"initialSeconds": 0}}},
    {"name": "test", "dependencies": ["build"]},
    {
        "name": "cleanup",
        "dependencies": ["build", "test"],
        "depends": "tasks.build.phase == 'Failed' || tasks.test.phase == 'Failed'",
    },
    {"name": "notify", "dependencies": ["cleanup"]},
)


def test_depends_runs_a_task_on_a_failure_and_the_handled_failure_does_not_fail_the_run() -> None:
    failed_once = [done("build", state=TaskState.FAILED, exit_code=1)]
    assert names(plan(HANDLER, {}, failed_once, now=NOW)) == ["build"]  # its retry comes first
    for_good = [*failed_once, done("build", 2, TaskState.FAILED, exit_code=1)]
    p = plan(HANDLER, {}, for_good, now=NOW)
    assert [(s.task, s.reason) for s in p.skips] == [
        ("test", "upstream task build did not succeed")
    ]
    history = [*for_good, done("test", state=TaskState.SKIPPED)]
    assert names(plan(HANDLER, {}, history, now=NOW)) == ["cleanup"]
    history.append(done("cleanup"))
    assert names(plan(HANDLER, {}, history, now=NOW)) == ["notify"]
    history.append(done("notify"))
    assert plan(HANDLER, {}, history, now=NOW).phase is WorkflowPhase.SUCCEEDED


def test_depends_false_skips_the_task_and_its_dependents_still_run() -> None:
    history = [done("build"), done("test")]
    p = plan(HANDLER, {}, history, now=T0)
    assert [(s.task, s.failed) for s in p.skips] == [("cleanup", False)]
    assert p.skips[0].reason.startswith("depends: ")
    history.append(done("cleanup", state=TaskState.SKIPPED))
    assert names(plan(HANDLER, {}, history, now=T0)) == ["notify"]


def test_a_failure_no_depends_accepted_still_fails_the_run() -> None:
    spec = definition(
        {"name": "a"},
        {"name": "b"},
        {"name": "on-a", "dependencies": ["a", "b"], "depends": "tasks.a.phase == 'Failed'"},
    )
    history = [
        done("a"),
        done("b", state=TaskState.FAILED, exit_code=2),
        done("on-a", state=TaskState.SKIPPED),
    ]
    final = plan(spec, {}, history, now=T0)
    assert final.phase is WorkflowPhase.FAILED
    assert final.failure is not None
    assert final.failure.task == "b"
