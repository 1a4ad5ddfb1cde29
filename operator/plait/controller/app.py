"""``plait operator``: Kopf with Plait's settings, its handlers, health and metrics.

Kopf is configured so that nothing of it leaks into users' objects under Kopf's names:
the finalizer, the progress and diff-base annotations all live under ``plait.dev/``.
Events are posted only for warnings and errors (each Event is an API write).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import functools
import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import click
import kopf
from aiohttp import web

from plait.controller.diffbase import SpecDigestDiffBaseStorage
from plait.controller.indexes import ReferenceIndexes
from plait.controller.options import FINALIZER, OperatorOptions
from plait.controller.reconcile import register_kind
from plait.controller.watches import register_with_kopf, run_watches
from plait.event_processing.gauges import queue_gauges
from plait.integration.health import register_health_checks
from plait.kernel.allocator import fix_mmap_threshold
from plait.kernel.config import Settings
from plait.kernel.database import Database
from plait.kernel.kube import Kube, current_namespace, load_client_modules
from plait.kernel.signals import run_until_signalled
from plait.kernel.watching import Subscription
from plait.observability import Telemetry
from plait.observability.endpoints import health_app
from plait.observability.logging import set_process_component
from plait.observability.metrics import DATABASE_GAUGES, time_kubernetes_api_call
from plait.resources.stores import KindBinding, OperatorContext
from plait.task_execution.logs import TaskLogCollector
from plait.task_execution.pods import PodHandler, pod_watch
from plait.task_execution.service import TaskExecution
from plait.testing_framework.cluster import ClusterTests
from plait.workflow_orchestrator.gauges import instance_gauges
from plait.workflow_orchestrator.http_tasks import register_http_tasks
from plait.workflow_orchestrator.members import Membership, scope_of, sole_owner
from plait.workflow_orchestrator.runtime import Orchestrator, register_runtime, task_watches

__all__ = ["build_registry", "configure_settings", "operator_command", "run_operator"]

logger = logging.getLogger(__name__)


def configure_settings(settings: kopf.OperatorSettings, options: OperatorOptions) -> None:
    """Plait's names for Kopf's bookkeeping, and quiet, write-thrifty defaults."""
    settings.persistence.finalizer = FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="plait.dev")
    settings.persistence.diffbase_storage = SpecDigestDiffBaseStorage(
        prefix="plait.dev", key="last-handled-spec"
    )
    settings.posting.level = logging.WARNING
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.batching.error_delays = (1, 2, 5, 10, 30, 60)


def bindings(orchestrator: Orchestrator) -> list[KindBinding]:
    """Every kind with the component store that persists it."""
    from plait.event_processing.handlers import BINDINGS as event_processing
    from plait.integration.handlers import BINDINGS as integration
    from plait.task_execution.handlers import BINDINGS as task_execution
    from plait.testing_framework.handlers import BINDINGS as testing_framework
    from plait.workflow_orchestrator.handlers import bindings as workflow_orchestrator

    return [
        *workflow_orchestrator(orchestrator),
        *task_execution,
        *integration,
        *event_processing,
        *testing_framework,
    ]


def build_registry(
    ctx: OperatorContext,
    orchestrator: Orchestrator,
    options: OperatorOptions,
    indexes: ReferenceIndexes,
    kinds: Sequence[KindBinding] | None = None,
    *,
    logged_in: asyncio.Event | None = None,
) -> tuple[kopf.OperatorRegistry, list[Subscription]]:
    """A fresh registry with every kind's handlers (a fresh one per run keeps tests apart),
    and the watches of the kinds followed by their events (WorkflowInstances).

    ``logged_in`` is set once credentials are loaded: Plait's own Kubernetes calls outside
    Kopf's handlers (the event dispatcher, the scheduler) wait for it.
    """
    registry = kopf.OperatorRegistry()

    # A private registry has none of Kopf's default login handlers: credentials come from
    # the kubernetes client (in-cluster service account, or KUBECONFIG), which this also
    # loads for Plait's own calls (plait.kernel.kube).
    @kopf.on.login(registry=registry)
    async def _login(**kwargs: Any) -> Any:
        # The client's loading reads files: in a thread, and the event set on the loop.
        credentials = await asyncio.to_thread(functools.partial(kopf.login_via_client, **kwargs))
        if logged_in is not None:
            logged_in.set()
        return credentials

    followed: list[Subscription] = []
    for binding in kinds if kinds is not None else bindings(orchestrator):
        subscription = register_kind(
            registry, binding, ctx, indexes, resync_seconds=options.resync_seconds
        )
        if subscription is not None:
            followed.append(subscription)
    register_runtime(registry, orchestrator)
    register_http_tasks(registry, orchestrator, logged_in)
    register_health_checks(registry, ctx, orchestrator.ownership)
    return registry, followed


async def _serve_health(options: OperatorOptions, ready: asyncio.Event) -> web.AppRunner | None:
    if not options.health_port:
        return None

    runner = web.AppRunner(health_app(ready), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, options.health_address, options.health_port).start()
    return runner


async def run_operator(
    options: OperatorOptions,
    settings: Settings | None = None,
    *,
    stop: asyncio.Event | None = None,
) -> None:
    """Run until ``stop`` is set (or SIGTERM/SIGINT when run from the CLI)."""
    settings = settings or Settings()
    set_process_component("operator")
    if options.migrate:
        from plait.kernel.migrations import migrate

        await asyncio.to_thread(migrate, settings)
    stop = stop or asyncio.Event()
    ready = asyncio.Event()
    loop = asyncio.get_running_loop()
    # Kubernetes client calls run in threads: enough of them for many launches at once.
    loop.set_default_executor(ThreadPoolExecutor(max_workers=options.api_threads))
    await asyncio.to_thread(load_client_modules)
    async with await Database.open(settings) as database:
        telemetry = Telemetry()
        await telemetry.start(database, "operator", retention=True)
        DATABASE_GAUGES.register_source("event_processing", queue_gauges)
        DATABASE_GAUGES.register_source("workflow_orchestrator", instance_gauges)
        kube = Kube(pool_size=options.api_threads, observe_call=time_kubernetes_api_call)
        tasks = TaskExecution(database, kube, job_ttl_seconds=options.job_ttl_seconds)
        ctx = OperatorContext(database, kube)
        # Without Kopf's peering (active/standby), replicas share the runs: each owns
        # those rendezvous hashing gives it among the live members.
        watched = None if options.all_namespaces else options.namespaces
        membership = (
            Membership(database, scope=scope_of(watched))
            if options.share_runs and options.peering is None
            else None
        )
        if membership is not None:
            await membership.refresh()  # before the first event: the runs are divided already
        orchestrator = Orchestrator(
            database,
            kube,
            tasks,
            namespaces=None if options.all_namespaces else options.namespaces,
            # Not sharing, every replica advances every run: none knows them alone.
            ownership=membership or sole_owner(exclusive=False),
        )
        logged_in = asyncio.Event()
        indexes = ReferenceIndexes(watched)
        registry, followed = build_registry(
            ctx, orchestrator, options, indexes, logged_in=logged_in
        )
        # Runs, their Jobs, Pods and refusals: many events per task, most of them another
        # replica's when replicas share the runs (see plait.controller.watches).
        collector = (
            TaskLogCollector(database, telemetry.settings)
            if telemetry.enabled and telemetry.settings.task_logs
            else None
        )
        pod_handlers: list[PodHandler] = [tasks.pods.on_pod]
        if collector is not None:
            collector.start()
            pod_handlers.append(collector.on_pod)
        subscriptions: list[Subscription] = [
            *followed,
            *task_watches(orchestrator),
            pod_watch(pod_handlers, orchestrator.ownership.owns),
        ]
        # Under peering Kopf knows which replica works, so it carries the handlers.
        own_streams = subscriptions if options.peering is None else []
        if not own_streams:
            register_with_kopf(registry, subscriptions)
        watching = asyncio.create_task(_run_watches(own_streams, indexes, watched, logged_in, stop))
        kopf_settings = kopf.OperatorSettings()
        configure_settings(kopf_settings, options)

        @kopf.on.startup(registry=registry)
        async def _started(**_: Any) -> None:
            ready.set()

        @kopf.on.cleanup(registry=registry)
        async def _stopping(**_: Any) -> None:
            # Kopf handles the signals itself: its cleanup is where shutdown starts, so the
            # dispatcher finishes the events in hand before Kopf cancels leftover tasks.
            stop.set()
            if services is not None:
                with contextlib.suppress(asyncio.CancelledError):
                    await services

        runner = await _serve_health(options, ready)
        sharing = asyncio.create_task(
            _share_runs(orchestrator, membership, options, logged_in, stop)
        )
        # WorkflowTests run in the cluster: each run by the replica that owns it.
        testing = asyncio.create_task(
            _run_tests(
                ClusterTests(
                    database,
                    kube,
                    owns=orchestrator.ownership.owns,
                    namespaces=watched,
                    deliver_event=orchestrator.deliver_event,
                ),
                logged_in,
                stop,
            )
        )
        services = (
            asyncio.create_task(
                _run_event_services(ctx, orchestrator, tasks, options, logged_in, stop)
            )
            if options.dispatch
            else None
        )
        try:
            await kopf.operator(
                registry=registry,
                settings=kopf_settings,
                standalone=options.peering is None,
                peering_name=options.peering,
                clusterwide=options.all_namespaces,
                namespaces=list(options.namespaces),
                stop_flag=stop,
            )
        finally:
            stop.set()
            if services is not None:
                with contextlib.suppress(asyncio.CancelledError):
                    await services
            with contextlib.suppress(asyncio.CancelledError):
                await sharing
            with contextlib.suppress(asyncio.CancelledError):
                await watching
            if collector is not None:
                await collector.stop()
            with contextlib.suppress(asyncio.CancelledError):
                await testing
            if runner is not None:
                await runner.cleanup()
            kube.close()
            await telemetry.stop()


async def _until_logged_in(logged_in: asyncio.Event, stop: asyncio.Event) -> bool:
    """Wait for Kubernetes credentials; False when stopped first."""
    waiter = asyncio.ensure_future(logged_in.wait())
    stopper = asyncio.ensure_future(stop.wait())
    await asyncio.wait({waiter, stopper}, return_when=asyncio.FIRST_COMPLETED)
    waiter.cancel()
    stopper.cancel()
    return not stop.is_set()


async def _run_tests(tests: ClusterTests, logged_in: asyncio.Event, stop: asyncio.Event) -> None:
    """Carry out the requested runs of WorkflowTests, once Kubernetes credentials are
    loaded."""
    if await _until_logged_in(logged_in, stop):
        await tests.run(stop)


async def _run_watches(
    subscriptions: Sequence[Subscription],
    indexes: ReferenceIndexes,
    namespaces: Sequence[str] | None,
    logged_in: asyncio.Event,
    stop: asyncio.Event,
) -> None:
    """Plait's own watches (the referenced kinds' specs; runs, Jobs, Pods and Events
    unless Kopf's peering carries those), once Kubernetes credentials are loaded."""
    if await _until_logged_in(logged_in, stop):
        await asyncio.gather(indexes.run(stop), run_watches(subscriptions, namespaces, stop))


async def _share_runs(
    orchestrator: Orchestrator,
    membership: Membership | None,
    options: OperatorOptions,
    logged_in: asyncio.Event,
    stop: asyncio.Event,
) -> None:
    """Keep this replica a member (heartbeats), resume the runs it gains when members
    come and go, and advance all its runs at every resync."""
    changed = asyncio.Event()

    async def on_change(_: tuple[str, ...]) -> None:
        changed.set()  # resumed below, so a long resume never delays a heartbeat

    async def resume_on_change() -> None:
        while not stop.is_set():
            waiter = asyncio.ensure_future(changed.wait())
            stopper = asyncio.ensure_future(stop.wait())
            await asyncio.wait({waiter, stopper}, return_when=asyncio.FIRST_COMPLETED)
            waiter.cancel()
            stopper.cancel()
            if stop.is_set():
                return
            changed.clear()
            try:
                await orchestrator.resume_owned()
            except Exception:
                logger.exception("resuming the runs this replica took over failed")

    changed.set()  # once at start: the runs owned whose objects the watch will not list
    loops = []
    if membership is not None:
        membership.set_on_change(on_change)
        loops.append(membership.run(stop))
    if await _until_logged_in(logged_in, stop):
        loops += [
            resume_on_change(),
            orchestrator.run_resync(stop, interval=options.resync_seconds),
        ]
    await asyncio.gather(*loops)


async def _run_event_services(
    ctx: OperatorContext,
    orchestrator: Orchestrator,
    tasks: TaskExecution,
    options: OperatorOptions,
    logged_in: asyncio.Event,
    stop: asyncio.Event,
) -> None:
    """The event dispatcher, the cron scheduler and artifact retention, once Kubernetes
    credentials are loaded."""
    from plait.event_processing.dispatcher import (
        Dispatcher,
        DispatchSettings,
        run_event_retention,
    )
    from plait.workflow_orchestrator.triggers import TriggerStarter, run_scheduler

    if not await _until_logged_in(logged_in, stop):
        return
    starter = TriggerStarter(ctx.db, ctx.kube)
    dispatcher = Dispatcher(
        ctx.db,
        [orchestrator.deliver_event, starter.on_event],
        DispatchSettings(
            batch_size=options.event_batch_size,
            visibility_timeout=dt.timedelta(seconds=options.event_visibility_timeout_seconds),
            poll_interval=options.event_poll_seconds,
        ),
        namespaces=None if options.all_namespaces else options.namespaces,
    )
    logger.info("event dispatcher %s started", dispatcher.worker)
    try:
        await asyncio.gather(
            dispatcher.run(stop),
            run_scheduler(starter, stop, poll=options.schedule_poll_seconds),
            run_event_retention(ctx.db, stop, days=options.event_retention_days),
            tasks.artifacts.retention(stop),
        )
    finally:
        await starter.close()


@click.command("operator")
@click.option(
    "-n",
    "--namespace",
    "namespaces",
    multiple=True,
    envvar="PLAIT_NAMESPACES",
    help="Namespace to watch (repeatable); default: the current one.",
)
@click.option(
    "-A",
    "--all-namespaces",
    is_flag=True,
    envvar="PLAIT_ALL_NAMESPACES",
    help="Watch every namespace.",
)
@click.option(
    "--health-port",
    type=int,
    default=8080,
    show_default=True,
    envvar="PLAIT_HEALTH_PORT",
    help="Port of /healthz and /metrics (0: off).",
)
@click.option(
    "--resync-seconds",
    type=float,
    default=300.0,
    show_default=True,
    envvar="PLAIT_RESYNC_SECONDS",
    help="Interval of the drift-repairing resync.",
)
@click.option(
    "--migrate",
    is_flag=True,
    envvar="PLAIT_MIGRATE_ON_START",
    help="Apply pending database migrations first.",
)
@click.option(
    "--job-ttl-seconds",
    type=int,
    default=600,
    show_default=True,
    envvar="PLAIT_JOB_TTL_SECONDS",
    help="Finished Jobs are deleted this long after they end.",
)
@click.option(
    "--dispatch/--no-dispatch",
    default=True,
    show_default=True,
    envvar="PLAIT_DISPATCH",
    help="Dispatch events to waiting workflows and triggers, and run cron triggers.",
)
@click.option(
    "--event-batch-size",
    type=click.IntRange(1, 1000),
    default=32,
    show_default=True,
    envvar="PLAIT_EVENT_BATCH_SIZE",
    help="Events leased per round trip.",
)
@click.option(
    "--event-visibility-timeout",
    "event_visibility_timeout_seconds",
    type=click.FloatRange(1, 3600),
    default=60.0,
    show_default=True,
    envvar="PLAIT_EVENT_VISIBILITY_TIMEOUT",
    help="Seconds before an event held by a dead dispatcher is taken over.",
)
@click.option(
    "--event-poll-seconds",
    type=click.FloatRange(0.05, 300),
    default=2.0,
    show_default=True,
    envvar="PLAIT_EVENT_POLL_SECONDS",
    help="Dispatcher poll interval besides LISTEN/NOTIFY.",
)
@click.option(
    "--event-retention-days",
    type=click.FloatRange(0),
    default=30.0,
    show_default=True,
    envvar="PLAIT_EVENT_RETENTION_DAYS",
    help="Delete dispatched events older than this (0: keep forever).",
)
@click.option(
    "--share-runs/--no-share-runs",
    default=True,
    show_default=True,
    envvar="PLAIT_SHARE_RUNS",
    help="Share the runs with the other replicas (each advances those it owns).",
)
@click.option(
    "--peering",
    envvar="PLAIT_PEERING",
    help="Kopf peering name: one replica works, the others stand by. Unset (the default), "
    "replicas share the runs.",
)
def operator_command(
    namespaces: tuple[str, ...],
    all_namespaces: bool,
    health_port: int,
    resync_seconds: float,
    migrate: bool,
    job_ttl_seconds: int,
    dispatch: bool,
    event_batch_size: int,
    event_visibility_timeout_seconds: float,
    event_poll_seconds: float,
    event_retention_days: float,
    share_runs: bool,
    peering: str | None,
) -> None:
    """Run the operator: reconcile Plait's resources into PostgreSQL and run workflows."""
    if namespaces and all_namespaces:
        raise click.UsageError("--namespace and --all-namespaces exclude each other")
    if not namespaces and not all_namespaces:
        namespaces = (current_namespace(),)
    options = OperatorOptions(
        namespaces=namespaces,
        all_namespaces=all_namespaces,
        health_port=health_port,
        resync_seconds=resync_seconds,
        migrate=migrate,
        job_ttl_seconds=job_ttl_seconds,
        dispatch=dispatch,
        event_batch_size=event_batch_size,
        event_visibility_timeout_seconds=event_visibility_timeout_seconds,
        event_poll_seconds=event_poll_seconds,
        event_retention_days=event_retention_days,
        share_runs=share_runs,
        peering=peering,
    )
    fix_mmap_threshold()  # before the work starts: see plait.kernel.allocator
    run_until_signalled(lambda stop: run_operator(options, stop=stop))
