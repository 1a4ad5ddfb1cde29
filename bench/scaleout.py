"""Issue #19: several operator replicas sharing the runs (``--share-runs``).

``scaleout``: the throughput workload (N one-task workflows) with 1, 2 and 3 replicas on
one namespace and database, so the figures compare with ``throughput``'s; the work must
spread (runs started per replica, ``plait_workflow_instances_started_total`` of each
replica's ``/metrics``) without the CPU per workflow growing. With 2 and 3 replicas a
second batch then measures the takeover: once every run is started, the replica owning
the most unfinished runs is SIGKILLed while their tasks still run (``TAKEOVER_TASK_S``),
so those runs can only end once a survivor takes them over. The takeover time is from
the SIGKILL to the first of the victim's runs seen Succeeded by a watch (the last one is
reported too); the victim's runs are those rendezvous hashing gives it among the members
its own log last named. Bounded by the membership's lease plus one heartbeat.

``churn``: 3 replicas and N (1,000) one-task workflows; every ``KILL_EVERY_S`` one replica
(in turn) is SIGKILLed and a fresh process started in its place, as a pod restart. Then
every run must be Succeeded (none lost) and each task must have exactly one attempt row
and one Job (none duplicated); a run that is not is reported with its rows, its Jobs and
the replicas' log lines naming it.

Both parts give the operators a Job TTL longer than the run, so that the Jobs can still
be counted at the end.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import signal
import threading
import time
import urllib.request
import uuid
from collections import Counter
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import psycopg

from bench import workloads
from bench.harness import (
    FINAL_PHASES,
    RESULTS,
    Environment,
    Operator,
    Watcher,
    create_many,
    say,
)
from plait import API_GROUP, API_VERSION
from plait.task_execution.jobs import LABEL_INSTANCE_UID, LABEL_TASK
from plait.testing._process import wait_until
from plait.workflow_orchestrator.members import MembershipSettings, owner_of

LOGS = RESULTS / "logs"
REPLICAS = (1, 2, 3)
TAKEOVER_RUNS_PER_REPLICA = 20
TAKEOVER_TASK_S = 4.0  # shorter than the lease: the victim's Jobs end before the takeover
KILL_EVERY_S = 10.0
IDLE_SAMPLE_S = 10.0  # each replica's CPU with no run, to tell its fixed cost from the work
CHURN_REPLICAS = 3
JOB_TTL_S = 7200  # longer than any part, so every Job can be counted at the end
STALL_S = 180.0  # no run ended for this long: stop killing, then give up
GRACE_S = 90.0  # after the last kill, for objects to show what PostgreSQL has
_MEMBERS = re.compile(r"operator members: (.*) \(this one: ([^)]+)\)")


class Replica(Operator):
    """``harness.Operator`` sharing the runs, with a Job TTL that outlasts the benchmark,
    what its log and ``/metrics`` say of its membership, and SIGKILL."""

    def __init__(self, env: Environment, namespace: str, dsn: str, log: Path) -> None:
        super().__init__(env, namespace, dsn, log)
        self.args += ["--share-runs", "--job-ttl-seconds", str(JOB_TTL_S)]
        self.killed_cpu_s: float | None = None

    def __enter__(self) -> Replica:
        super().__enter__()
        return self

    def _records(self, needle: str) -> list[dict[str, Any]]:
        """This replica's JSON log records containing ``needle`` (a line being written is
        skipped)."""
        found = []
        with self.log.open(errors="replace") as lines:
            for line in lines:
                if needle in line:
                    try:
                        found.append(json.loads(line))
                    except ValueError:
                        continue
        return found

    def membership(self) -> tuple[tuple[str, ...], str | None]:
        """The members this replica last logged, and its own name."""
        for record in reversed(self._records("operator members:")):
            m = _MEMBERS.search(record["message"])
            if m:
                return tuple(m[1].split(", ")), m[2]
        return (), None

    def started_runs(self) -> float:
        """The runs this replica started (plait_workflow_instances_started_total)."""
        url = f"http://127.0.0.1:{self.health_port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as response:
            text = response.read().decode()
        found = re.findall(r"^plait_workflow_instances_started_total\{[^}]*\} (\S+)$", text, re.M)
        return sum(float(v) for v in found)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL (no cleanup, like a lost node), after noting the CPU it used."""
        assert self.proc is not None
        self.killed_cpu_s = self.cpu_seconds()
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def total_cpu_s(self) -> float:
        return self.killed_cpu_s if self.killed_cpu_s is not None else self.cpu_seconds()

    def log_times(self, needle: str, after: float) -> list[float]:
        """Wall-clock times (epoch s) of this replica's log lines containing ``needle``
        written after ``after``."""
        times = (dt.datetime.fromisoformat(r["time"]).timestamp() for r in self._records(needle))
        return [t for t in times if t >= after]


class Heartbeats(threading.Thread):
    """Samples ``operator_members`` twice a second: the oldest each member's heartbeat got
    (PostgreSQL's clock). Near the lease, a live replica is about to be taken for dead."""

    def __init__(self, dsn: str) -> None:
        super().__init__(daemon=True)
        self.dsn = dsn
        self.max_age: dict[str, float] = {}
        self.stop = threading.Event()

    def run(self) -> None:
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            while not self.stop.wait(0.5):
                for member, age in conn.execute(
                    "SELECT member, extract(epoch FROM clock_timestamp() - heartbeat_at) "
                    "FROM workflow_orchestrator_service.operator_members"
                ).fetchall():
                    self.max_age[member] = max(self.max_age.get(member, 0.0), float(age))

    def __enter__(self) -> Heartbeats:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.join()


def _start(env: Environment, stack: ExitStack, ns: str, dsn: str, log: Path) -> Replica:
    log.unlink(missing_ok=True)
    return stack.enter_context(Replica(env, ns, dsn, log))


def _wait_members(replicas: list[Replica], count: int) -> None:
    if count == 1:
        return  # a replica alone logs no change of members
    wait_until(
        lambda: all(len(r.membership()[0]) == count for r in replicas if r.alive()),
        timeout=60,
        what=f"every replica to see {count} members",
    )


def _uids(env: Environment, ns: str) -> dict[str, str]:
    listing = env.custom.list_namespaced_custom_object(
        API_GROUP, API_VERSION, ns, "workflowinstances"
    )
    return {o["metadata"]["name"]: o["metadata"]["uid"] for o in listing["items"]}


def _create(env: Environment, ns: str, workflow: str, names: list[str]) -> None:
    create_many(
        lambda body: env.custom.create_namespaced_custom_object(
            API_GROUP, API_VERSION, ns, "workflowinstances", body
        ),
        (workloads.instance(n, workflow) for n in names),
    )


# -- exactly once --------------------------------------------------------------------------
def exactly_once(env: Environment, ns: str, dsn: str, tasks: int) -> dict[str, Any]:
    """Each task of each run: one attempt row (attempt 1) and one Job, and the Jobs are
    exactly the rows' ``job_name``s. ``tasks``: how many there must be in all."""
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT workflow_instance_id::text, task_name, count(*), max(attempt), "
            "array_agg(job_name) FROM task_execution_service.task_instances "
            "WHERE namespace = %s GROUP BY 1, 2",
            (ns,),
        ).fetchall()
    repeated_rows = {f"{r[0]}/{r[1]}": r[4] for r in rows if r[2] != 1 or r[3] != 1}
    recorded = {j for r in rows for j in r[4]}
    jobs = env.batch.list_namespaced_job(ns).items
    per_task = Counter(
        (j.metadata.labels.get(LABEL_INSTANCE_UID), j.metadata.labels.get(LABEL_TASK)) for j in jobs
    )
    names = {j.metadata.name for j in jobs}
    return {
        "tasks_expected": tasks,
        "attempt_rows": sum(r[2] for r in rows),
        "tasks_with_rows": len(rows),
        "tasks_with_more_than_one_attempt": repeated_rows,
        "jobs": len(jobs),
        "tasks_with_more_than_one_job": {f"{k[0]}/{k[1]}": n for k, n in per_task.items() if n > 1},
        "jobs_without_row": sorted(names - recorded),
        "rows_without_job": sorted(recorded - names),
        "ok": len(rows) == tasks
        and not repeated_rows
        and len(jobs) == tasks
        and all(n == 1 for n in per_task.values())
        and names == recorded,
    }


def run_latencies(
    dsn: str, ns: str, created: dict[str, float], seen: dict[str, float]
) -> dict[str, Any]:
    """Per run (wall-clock seconds, one machine): its object's creation to its row's start
    and finish, and that finish to the watch seeing the object Succeeded. A run an
    operator recorded late, or whose status it recorded but did not publish before it
    died, stands out."""
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT name, extract(epoch FROM started_at), extract(epoch FROM finished_at) "
            "FROM workflow_orchestrator_service.workflow_instances WHERE namespace = %s",
            (ns,),
        ).fetchall()
    start = {n: float(s) - created[n] for n, s, _ in rows if s is not None and n in created}
    end = {n: float(f) - created[n] for n, _, f in rows if f is not None and n in created}
    lag = {n: seen[n] - float(f) for n, _, f in rows if f is not None and n in seen}

    def summary(values: dict[str, float]) -> dict[str, float]:
        ordered = sorted(values.values())
        at = {"p50": 0.5, "p99": 0.99, "max": 1.0}
        return {k: round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 2)
                for k, q in at.items()} if ordered else {}  # fmt: skip

    bound = MembershipSettings().lease_seconds + MembershipSettings().heartbeat_seconds
    return {
        "create_to_started_s": summary(start),
        "create_to_finished_s": summary(end),
        "finished_to_object_succeeded_s": summary(lag),
        "object_succeeded_later_than_takeover_bound": {
            n: round(v, 1) for n, v in sorted(lag.items(), key=lambda kv: -kv[1]) if v > bound
        },
    }


def _db_phases(dsn: str, ns: str) -> dict[str, str]:
    """Each run's phase as the operators recorded it (PostgreSQL)."""
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT name, phase FROM workflow_orchestrator_service.workflow_instances "
            "WHERE namespace = %s",
            (ns,),
        ).fetchall()
    return {str(n): str(p) for n, p in rows}


def _created_at(env: Environment, ns: str) -> dict[str, float]:
    listing = env.custom.list_namespaced_custom_object(
        API_GROUP, API_VERSION, ns, "workflowinstances"
    )
    return {
        o["metadata"]["name"]: dt.datetime.fromisoformat(
            o["metadata"]["creationTimestamp"].replace("Z", "+00:00")
        ).timestamp()
        for o in listing["items"]
    }


def evidence(
    env: Environment, ns: str, dsn: str, names: list[str], logs: list[Path]
) -> dict[str, Any]:
    """What a lost or repeated run left: its object's status, its rows, its Jobs, and the
    replicas' log lines naming it (or its uid)."""
    uids = _uids(env, ns)
    out: dict[str, Any] = {}
    with psycopg.connect(dsn) as conn:
        for name in names[:20]:
            uid = uids.get(name, "")
            obj = env.custom.get_namespaced_custom_object(
                API_GROUP, API_VERSION, ns, "workflowinstances", name
            )
            run_row = conn.execute(
                "SELECT phase, created_at::text, started_at::text, finished_at::text "
                "FROM workflow_orchestrator_service.workflow_instances WHERE id::text = %s",
                (uid,),
            ).fetchone()
            attempts = conn.execute(
                "SELECT task_name, attempt, job_name, state, created_at::text, "
                "finished_at::text FROM task_execution_service.task_instances "
                "WHERE workflow_instance_id::text = %s ORDER BY task_name, attempt",
                (uid,),
            ).fetchall()
            jobs = env.batch.list_namespaced_job(
                ns, label_selector=f"{LABEL_INSTANCE_UID}={uid}"
            ).items
            lines = [
                f"{log.name}: {line.strip()}"
                for log in logs
                if log.exists()
                for line in log.read_text(errors="replace").splitlines()
                if name in line or (uid and uid in line)
            ]
            out[name] = {
                "uid": uid,
                "status": obj.get("status"),
                "run_row": list(run_row) if run_row else None,
                "attempt_rows": [list(a) for a in attempts],
                "jobs": [
                    {
                        "name": j.metadata.name,
                        "created": str(j.metadata.creation_timestamp),
                        "labels": j.metadata.labels,
                    }
                    for j in jobs
                ],
                "log_lines": lines[:40],
            }
    return out


# -- scale-out -----------------------------------------------------------------------------
def _takeover(
    env: Environment, ns: str, dsn: str, replicas: list[Replica], base_started: float
) -> dict[str, Any]:
    """Kill the replica owning the most unfinished runs of a fresh batch, once all are
    started; how long its runs then wait for a survivor."""
    names = [f"to-{i:04d}" for i in range(TAKEOVER_RUNS_PER_REPLICA * len(replicas))]
    with Watcher(env, ns, "workflowinstances") as watcher:
        _create(env, ns, "slow", names)
        wait_until(
            lambda: sum(r.started_runs() for r in replicas) >= base_started + len(names),
            timeout=300,
            what="every run of the takeover batch to be started",
        )
        uids = _uids(env, ns)
        members = {r.membership()[1]: r for r in replicas}
        live = replicas[0].membership()[0]
        unfinished = [n for n in names if n not in watcher.finished]
        owned = {
            m: [n for n in unfinished if owner_of(uuid.UUID(uids[n]), live) == m] for m in members
        }
        victim_name = max(owned, key=lambda m: len(owned[m]))
        victim, victims_runs = members[victim_name], owned[victim_name]
        if not victims_runs:
            raise RuntimeError("the takeover batch ended before the kill: nothing to take over")
        killed_wall = time.time()
        killed_at = time.monotonic()
        victim.kill()
        say(f"scaleout: SIGKILLed a replica with {len(victims_runs)} unfinished runs")
        watcher.wait_for(names, 120)
        seen = dict(watcher.finished)
    times = sorted(seen[n][0] - killed_at for n in victims_runs if n in seen)
    unseen = sorted(set(names) - seen.keys())
    failed = {n: seen[n][1] for n in names if n in seen and seen[n][1] != "ok"}
    phases = _db_phases(dsn, ns)
    survivors = [r for r in replicas if r is not victim]
    seen_gone = [
        t - killed_wall for r in survivors for t in r.log_times("operator members:", killed_wall)
    ]
    return {
        "runs": len(names),
        "task_duration_s": TAKEOVER_TASK_S,
        "victims_unfinished_runs": len(victims_runs),
        "failed": failed,
        "not_seen_succeeded_in_120s": {n: phases.get(n) for n in unseen},
        "kill_to_members_changed_s": round(min(seen_gone), 2) if seen_gone else None,
        "kill_to_first_victim_run_succeeded_s": round(times[0], 2) if times else None,
        "kill_to_last_victim_run_succeeded_s": round(times[-1], 2) if times else None,
    }


def _scale(env: Environment, count: int, n: int, duration_s: float) -> dict[str, Any]:
    ns = env.namespace(f"so-{count}")
    db = f"bench_scaleout_{count}"
    dsn = env.database(db)
    timeout = max(300.0, n * 3.0)
    with ExitStack() as stack:
        replicas = [
            _start(env, stack, ns, dsn, LOGS / f"scaleout-{count}-replica{i}.log")
            for i in range(count)
        ]
        _wait_members(replicas, count)
        env.apply(ns, workloads.definition("one", workloads.one_task(duration_s)))
        env.apply(ns, workloads.definition("slow", workloads.one_task(TAKEOVER_TASK_S)))
        env.wait_definition_ready(ns, "one")
        env.wait_definition_ready(ns, "slow")
        idle0 = [r.cpu_seconds() for r in replicas]
        time.sleep(IDLE_SAMPLE_S)  # a measurement window, not a wait for a condition
        idle_rate = [
            (r.cpu_seconds() - c) / IDLE_SAMPLE_S for r, c in zip(replicas, idle0, strict=True)
        ]
        say(f"scaleout: {count} replica(s), {n} WorkflowInstances")
        cpu0 = [r.cpu_seconds() for r in replicas]
        started0 = [r.started_runs() for r in replicas]
        names = [f"run-{i:05d}" for i in range(n)]
        since = time.time()
        with Heartbeats(dsn) as beats:
            res = workloads.run_plait_instances(env, ns, "one", names, timeout)
        cpu = [r.cpu_seconds() - c for r, c in zip(replicas, cpu0, strict=True)]
        started = [r.started_runs() - s for r, s in zip(replicas, started0, strict=True)]
        res.update(
            replicas=count,
            per_minute=round(n / res["wall_s"] * 60, 1),
            started_per_replica=[int(s) for s in started],
            operator_cpu_s_per_replica=[round(c, 2) for c in cpu],
            operator_cpu_ms_per_workflow=round(1000 * sum(cpu) / n, 1),
            # What each replica spends with no run at all (heartbeats, polls, gauges),
            # and the CPU per workflow once that fixed cost over the run's wall time is
            # taken out: the work of the runs themselves.
            idle_cpu_ms_per_s_per_replica=[round(1000 * r, 1) for r in idle_rate],
            operator_cpu_ms_per_workflow_beyond_idle=round(
                1000 * (sum(cpu) - sum(idle_rate) * res["wall_s"]) / n, 1
            ),
            peak_rss_mib_per_replica=[r.peak_rss_mib() for r in replicas],
            # No replica is stopped meanwhile: any change of members is a live one
            # taken for dead (its heartbeat older than the lease), and its runs resumed.
            membership_changes_logged=[
                len(r.log_times("operator members:", since)) for r in replicas
            ],
            max_heartbeat_age_s=round(max(beats.max_age.values(), default=0.0), 2),
        )
        say(f"scaleout: {count} replica(s): {res['per_minute']}/min, started {started}")
        if count > 1:
            res["takeover"] = _takeover(
                env, ns, dsn, replicas, sum(r.started_runs() for r in replicas)
            )
            say(f"scaleout: takeover {res['takeover']}")
            res["exactly_once"] = exactly_once(env, ns, dsn, n + TAKEOVER_RUNS_PER_REPLICA * count)
        else:
            res["exactly_once"] = exactly_once(env, ns, dsn, n)
    return res


def run_scaleout(env: Environment, n: int, *, duration_s: float) -> dict[str, Any]:
    """The same N one-task workflows with 1, 2 and 3 replicas (each on a fresh namespace
    and database), then a takeover for 2 and 3."""
    result: dict[str, Any] = {"n": n, "task_duration_s": duration_s, "membership": _settings()}
    result["runs"] = []
    for count in REPLICAS:
        result["runs"].append(_scale(env, count, n, duration_s))
        env.quiesce()  # the next replica count starts with no Jobs left
    return result


# -- churn ---------------------------------------------------------------------------------
class _Killer(threading.Thread):
    """Every KILL_EVERY_S: SIGKILL the next replica in turn and start a fresh one."""

    def __init__(self, env: Environment, ns: str, dsn: str, stack: ExitStack) -> None:
        super().__init__(daemon=True)
        self.env, self.ns, self.dsn, self.stack = env, ns, dsn, stack
        self.replicas: list[Replica] = []
        self.all: list[Replica] = []
        self.kills: list[float] = []
        self.stop = threading.Event()
        self.error: BaseException | None = None
        for slot in range(CHURN_REPLICAS):
            self._spawn(slot)

    def _spawn(self, slot: int) -> None:
        log = LOGS / f"churn-replica{slot}-{len(self.all)}.log"
        replica = _start(self.env, self.stack, self.ns, self.dsn, log)
        self.all.append(replica)
        if slot < len(self.replicas):
            self.replicas[slot] = replica
        else:
            self.replicas.append(replica)

    def run(self) -> None:
        started = time.monotonic()
        try:
            while not self.stop.wait(max(0.0, started + KILL_EVERY_S * (len(self.kills) + 1)
                                         - time.monotonic())):  # fmt: skip
                slot = len(self.kills) % CHURN_REPLICAS
                self.replicas[slot].kill()
                self.kills.append(time.monotonic() - started)
                self._spawn(slot)
        except BaseException as exc:
            self.error = exc


def run_churn(env: Environment, n: int, *, duration_s: float) -> dict[str, Any]:
    """N one-task workflows while 3 replicas are SIGKILLed and restarted in turn."""
    ns = env.namespace("churn")
    dsn = env.database("bench_churn")
    result: dict[str, Any] = {
        "n": n,
        "replicas": CHURN_REPLICAS,
        "kill_every_s": KILL_EVERY_S,
        "task_duration_s": duration_s,
        "membership": _settings(),
    }
    names = [f"run-{i:05d}" for i in range(n)]
    with ExitStack() as stack:
        killer = _Killer(env, ns, dsn, stack)
        _wait_members(killer.replicas, CHURN_REPLICAS)
        env.apply(ns, workloads.definition("one", workloads.one_task(duration_s)))
        env.wait_definition_ready(ns, "one")
        say(f"churn: {n} WorkflowInstances, a replica SIGKILLed every {KILL_EVERY_S:g}s")
        with Watcher(env, ns, "workflowinstances") as watcher:
            start = time.monotonic()
            wall_offset = time.time() - start
            killer.start()
            _create(env, ns, "one", names)
            done, recorded_done, last_change = 0, 0, time.monotonic()
            # Kill while runs are left to do; once PostgreSQL has every run ended, the
            # killing stops and the objects get GRACE_S to show it.
            while done < n and recorded_done < n and time.monotonic() - last_change < STALL_S:
                watcher.wait_for(names, 10)
                now_done = len(set(names) & watcher.finished.keys())
                phases = _db_phases(dsn, ns)
                now_recorded = sum(1 for x in names if phases.get(x) in FINAL_PHASES)
                if (now_done, now_recorded) != (done, recorded_done):
                    done, recorded_done, last_change = now_done, now_recorded, time.monotonic()
                    say(f"churn: {done}/{n} seen ended, {recorded_done} ended in PostgreSQL, "
                        f"{len(killer.kills)} kills")  # fmt: skip
                if killer.error is not None:
                    raise RuntimeError("restarting a replica failed") from killer.error
            killer.stop.set()
            killer.join()
            kills_stopped = time.monotonic() - start
            if done < n:
                say(f"churn: no more kills; {GRACE_S:g}s for the last objects to show it")
                watcher.wait_for(names, GRACE_S)
            finished = dict(watcher.finished)
        phases = _db_phases(dsn, ns)
        wall = max((finished[x][0] for x in names if x in finished), default=start) - start
        lost = sorted(set(names) - finished.keys())
        failed = {x: finished[x][1] for x in names if x in finished and finished[x][1] != "ok"}
        cpu = sum(r.total_cpu_s() for r in killer.all)
        seen_wall = {x: t + wall_offset for x, (t, _) in finished.items()}
        result.update(
            wall_s=round(wall, 1),
            per_minute=round(len(finished) / wall * 60, 1) if wall else None,
            kills=len(killer.kills),
            kill_times_s=[round(k, 1) for k in killer.kills],
            kills_stopped_at_s=round(kills_stopped, 1),
            processes=len(killer.all),
            succeeded=sum(1 for x in names if finished.get(x, (0, ""))[1] == "ok"),
            succeeded_in_postgresql=sum(1 for x in names if phases.get(x) == "Succeeded"),
            lost={x: f"object not ended; PostgreSQL: {phases.get(x)}" for x in lost},
            failed=failed,
            operator_cpu_ms_per_workflow=round(1000 * cpu / n, 1),
            peak_rss_mib_per_live_replica=[r.peak_rss_mib() for r in killer.replicas],
            latency=run_latencies(dsn, ns, _created_at(env, ns), seen_wall),
        )
        result["exactly_once"] = exactly_once(env, ns, dsn, n)
        once = result["exactly_once"]
        late = [*result["latency"]["object_succeeded_later_than_takeover_bound"]][:5]
        suspects = [
            *lost,
            *failed,
            *late,
            *_names_of(env, ns, [*once["tasks_with_more_than_one_attempt"],
                                 *once["tasks_with_more_than_one_job"]]),
        ]  # fmt: skip
        if suspects:
            result["evidence"] = evidence(env, ns, dsn, suspects, [r.log for r in killer.all])
    return result


def _names_of(env: Environment, ns: str, keys: list[str]) -> list[str]:
    """Run names of ``uid/task`` keys."""
    by_uid = {uid: name for name, uid in _uids(env, ns).items()}
    return [by_uid.get(k.split("/", 1)[0], k) for k in keys]


def _settings() -> dict[str, float]:
    s = MembershipSettings()
    return {
        "heartbeat_s": s.heartbeat_seconds,
        "lease_s": s.lease_seconds,
        "takeover_bound_s": s.lease_seconds + s.heartbeat_seconds,
    }


def run(env: Environment, part: str, n: int, *, duration_s: float) -> dict[str, Any]:
    if part == "churn":
        return run_churn(env, n, duration_s=duration_s)
    return run_scaleout(env, n, duration_s=duration_s)


def rows(results: dict[str, dict[str, Any]]) -> list[tuple[Any, ...]]:
    """Lines of ``bench.run.table``: benchmark, metric, value per replica count."""
    out: list[tuple[Any, ...]] = []
    so = results.get("scaleout")
    if so and "runs" in so:
        for r in so["runs"]:
            label = f"scaleout n={so['n']} replicas={r['replicas']}"
            out += [
                (label, "workflows/min (wall s)", r["per_minute"], r["wall_s"], ""),
                ("", "runs started per replica", r["started_per_replica"], "", ""),
                ("", "operator CPU ms/workflow (sum)", r["operator_cpu_ms_per_workflow"], "", ""),
                ("", "idle CPU ms/s per replica", r["idle_cpu_ms_per_s_per_replica"], "", ""),
                (
                    "",
                    "operator CPU ms/workflow beyond idle",
                    r["operator_cpu_ms_per_workflow_beyond_idle"],
                    "",
                    "",
                ),
                ("", "peak RSS MiB per replica", r["peak_rss_mib_per_replica"], "", ""),
                ("", "members changes logged (no kill)", r["membership_changes_logged"], "", ""),
                ("", "oldest heartbeat s (lease 8)", r["max_heartbeat_age_s"], "", ""),
                ("", "one attempt and one Job per task", r["exactly_once"]["ok"], "", ""),
            ]
            to = r.get("takeover")
            if to:
                out.append(("", "takeover s: members | first | last run",
                            to["kill_to_members_changed_s"],
                            to["kill_to_first_victim_run_succeeded_s"],
                            to["kill_to_last_victim_run_succeeded_s"]))  # fmt: skip
    ch = results.get("churn")
    if ch and "kills" in ch:
        once = ch["exactly_once"]
        out += [
            (f"churn n={ch['n']} replicas={ch['replicas']}", "wall s (workflows/min)",
             ch["wall_s"], ch["per_minute"], ""),
            ("", "kills (every s)", ch["kills"], ch["kill_every_s"], ""),
            ("", "succeeded | lost | failed", ch["succeeded"], len(ch["lost"]), len(ch["failed"])),
            ("", "ended in PostgreSQL: Succeeded", ch["succeeded_in_postgresql"], "", ""),
            ("", "object Succeeded s after row: p50 | max",
             ch["latency"]["finished_to_object_succeeded_s"].get("p50"),
             ch["latency"]["finished_to_object_succeeded_s"].get("max"), ""),
            ("", "objects later than the takeover bound",
             len(ch["latency"]["object_succeeded_later_than_takeover_bound"]), "", ""),
            ("", "attempt rows | Jobs", once["attempt_rows"], once["jobs"], ""),
            ("", "tasks with >1 attempt | >1 Job", len(once["tasks_with_more_than_one_attempt"]),
             len(once["tasks_with_more_than_one_job"]), ""),
            ("", "operator CPU ms/workflow (sum)", ch["operator_cpu_ms_per_workflow"], "", ""),
            ("", "create -> finished s p50 | max", ch["latency"]["create_to_finished_s"].get("p50"),
             ch["latency"]["create_to_finished_s"].get("max"), ""),
        ]  # fmt: skip
    return out
