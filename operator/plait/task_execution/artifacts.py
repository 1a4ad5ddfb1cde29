"""Task artifacts: files larger than the termination message, kept in an S3 bucket.

A workflow names its artifact repository (``spec.artifactRepository.integration``, an
Integration of type ``s3``). The bucket's credentials never reach a task's container:

- before an attempt's Job, the operator writes one ``task_artifacts`` row per output
  artifact (its object key, one per attempt and name) and *presigns* a PUT URL for each,
  and a GET URL for each input artifact (the object a succeeded upstream attempt stored),
  valid until the attempt's deadline (and an hour). They go into a per-attempt Secret
  (``plan.json``), created before the Job and deleted when the attempt's end is recorded,
  never into the Job itself;
- ``plait-artifacts`` (``hack/plait-artifacts``) downloads the inputs in an init container
  and, wrapping the task's command, uploads the outputs after it exits 0, refusing a file
  over its limit before anything is uploaded;
- when the Job completes, the operator checks every object (HEAD): one missing or over its
  limit fails the attempt (an over-limit object is deleted), the others are recorded with
  their size, and only recorded objects are handed downstream;
- retention (:func:`run_artifact_retention`) deletes the objects of rows older than
  ``PLAIT_ARTIFACT_RETENTION_DAYS`` and marks them deleted.

The operator reads the repository Integration's Secret (and only that one) to sign URLs
and delete objects.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import json
import logging
import uuid
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from psycopg import AsyncConnection
from psycopg.rows import class_row
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from plait import __version__
from plait.integration import credentials
from plait.integration.credentials import TaskIntegration
from plait.kernel.database import Database
from plait.kernel.kube import Kube
from plait.resources.common import DEFAULT_ARTIFACT_MAX_BYTES, MAX_ARTIFACT_BYTES, OutputArtifact
from plait.resources.workflow import InputArtifact
from plait.task_execution.jobs import JobArtifacts, JobRequest

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

__all__ = [
    "ArtifactError",
    "ArtifactRow",
    "ArtifactSettings",
    "Artifacts",
    "Store",
    "StoreConfig",
    "insert_output_rows",
    "object_key",
    "plan_document",
    "run_artifact_retention",
    "stored_artifact",
    "url_lifetime",
]

logger = logging.getLogger(__name__)
COMPONENT = "task_execution"
#: How long a Store (its credentials read from the Secret) is reused before reading again.
STORE_CACHE_SECONDS = 60.0
#: SigV4 presigned URLs live at most a week.
MAX_URL_SECONDS = 7 * 24 * 3600
#: Added to a task's timeout: the Pod may wait for a node and pull its image first.
URL_MARGIN_SECONDS = 3600


class ArtifactError(Exception):
    """An attempt's artifacts cannot be arranged (the message says why, for the task)."""


class ArtifactSettings(BaseSettings):
    """Artifacts as the operator handles them, from ``PLAIT_*`` environment variables."""

    model_config = SettingsConfigDict(env_prefix="PLAIT_", extra="ignore", frozen=True)

    artifacts_image: str = Field(
        default=f"ghcr.io/plait-dev/plait-artifacts:{__version__}",
        description="Image of plait-artifacts, the init container and command wrapper of "
        "tasks with artifacts.",
    )
    artifact_attempt_max_bytes: int = Field(
        default=MAX_ARTIFACT_BYTES,
        ge=0,
        description="Most bytes one attempt's output artifacts may hold together.",
    )
    artifact_retention_days: float = Field(
        default=30.0,
        ge=0,
        description="Artifacts older than this are deleted from their bucket; 0 keeps all.",
    )
    artifact_retention_interval_seconds: float = Field(
        default=3600.0, gt=0, description="How often retention looks for old artifacts."
    )


@dataclass(frozen=True)
class StoreConfig:
    """Where and as whom to reach a bucket: an s3 Integration's settings and credentials."""

    bucket: str
    region: str
    endpoint: str | None
    prefix: str
    access_key_id: str
    secret_access_key: str

    @classmethod
    def from_integration(
        cls, integration: TaskIntegration, secret: Mapping[str, str] | None
    ) -> StoreConfig:
        if integration.type != "s3":
            raise ArtifactError(
                f"artifactRepository: Integration {integration.name!r} is of type "
                f"{integration.type!r}, not s3"
            )
        if not integration.secret_name or secret is None:
            raise ArtifactError(
                f"artifactRepository: Integration {integration.name!r} has no secretRef "
                "(its accessKeyId and secretAccessKey)"
            )
        values: dict[str, str] = {}
        for item in integration.secret_items:
            value = secret.get(item.secret_key)
            if not value:
                raise ArtifactError(
                    f"artifactRepository: Secret {integration.secret_name!r} has no key "
                    f"{item.secret_key!r} ({item.type_key} of Integration {integration.name!r})"
                )
            values[item.type_key] = value
        settings = integration.settings
        prefix = str(settings.get("prefix") or "")
        if prefix and not prefix.endswith("/"):
            prefix += "/"
        return cls(
            bucket=str(settings["bucket"]),
            region=str(settings.get("region") or "us-east-1"),
            endpoint=str(settings["endpoint"]) if settings.get("endpoint") else None,
            prefix=prefix,
            access_key_id=values["accessKeyId"],
            secret_access_key=values["secretAccessKey"],
        )


def object_key(
    prefix: str, namespace: str, instance_uid: str, task: str, attempt: int, name: str
) -> str:
    """``<prefix><namespace>/<instance uid>/<task>/<attempt>/<name>``: each attempt's
    artifact its own object, so a retry never overwrites what an earlier attempt stored."""
    return f"{prefix}{namespace}/{instance_uid}/{task}/{attempt}/{name}"


class Store:
    """One bucket through boto3 (path-style addressing with a custom endpoint, which
    S3-compatible servers expect). Its calls block: run them in a thread. boto3's errors
    come out as :class:`ArtifactError`, and boto3 is imported only when a Store is made:
    an operator whose runs keep no artifacts never loads it (about 7 MiB)."""

    def __init__(self, config: StoreConfig) -> None:
        import boto3
        from botocore.config import Config

        self.config = config
        self._client: S3Client = boto3.client(
            "s3",
            endpoint_url=config.endpoint,
            region_name=config.region,
            aws_access_key_id=config.access_key_id,
            aws_secret_access_key=config.secret_access_key,
            config=Config(
                signature_version="s3v4",
                s3={"addressing_style": "path" if config.endpoint else "auto"},
                retries={"max_attempts": 3, "mode": "standard"},
                connect_timeout=10,
                read_timeout=30,
            ),
        )

    @property
    def bucket(self) -> str:
        return self.config.bucket

    def presign_put(self, key: str, seconds: int) -> str:
        """A URL that uploads exactly ``key`` (any other key is refused) until it expires."""
        with _s3_errors(f"presigning an upload to s3://{self.bucket}/{key}"):
            return self._client.generate_presigned_url(
                "put_object", Params={"Bucket": self.bucket, "Key": key}, ExpiresIn=seconds
            )

    def presign_get(self, key: str, seconds: int) -> str:
        """A URL that downloads exactly ``key`` until it expires."""
        with _s3_errors(f"presigning a download of s3://{self.bucket}/{key}"):
            return self._client.generate_presigned_url(
                "get_object", Params={"Bucket": self.bucket, "Key": key}, ExpiresIn=seconds
            )

    def size(self, key: str) -> int | None:
        """The stored object's size; None when there is none."""
        from botocore.exceptions import ClientError

        with _s3_errors(f"reading the size of s3://{self.bucket}/{key}"):
            try:
                head = self._client.head_object(Bucket=self.bucket, Key=key)
            except ClientError as exc:
                code = str(exc.response.get("Error", {}).get("Code"))
                if code in ("404", "NoSuchKey", "NotFound"):
                    return None
                raise
        return int(head["ContentLength"])

    def delete(self, keys: Sequence[str]) -> None:
        """Delete objects (one missing already is fine), 1,000 per request."""
        for start in range(0, len(keys), 1000):
            chunk = keys[start : start + 1000]
            with _s3_errors(f"deleting {len(chunk)} objects from {self.bucket}"):
                answer = self._client.delete_objects(
                    Bucket=self.bucket,
                    Delete={"Objects": [{"Key": k} for k in chunk], "Quiet": True},
                )
            errors = answer.get("Errors") or []
            if errors:
                first = errors[0]
                raise ArtifactError(
                    f"deleting {len(errors)} of {len(chunk)} objects from {self.bucket} "
                    f"failed, e.g. {first.get('Key')}: {first.get('Code')} {first.get('Message')}"
                )


@contextlib.contextmanager
def _s3_errors(doing: str) -> Iterator[None]:
    """boto3's errors (of the request, of the connection) as an :class:`ArtifactError`."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        yield
    except (BotoCoreError, ClientError) as exc:
        raise ArtifactError(f"{doing}: {exc}") from exc


def url_lifetime(timeout_seconds: int | None) -> int:
    """How long an attempt's URLs are valid: its timeout and an hour, at most a week."""
    if not timeout_seconds:
        return MAX_URL_SECONDS
    return min(timeout_seconds + URL_MARGIN_SECONDS, MAX_URL_SECONDS)


def plan_document(
    outputs: Sequence[tuple[OutputArtifact, str]],
    inputs: Sequence[tuple[InputArtifact, str]],
    *,
    max_total_bytes: int,
) -> str:
    """``plan.json`` for plait-artifacts: each output (path, URL, limit) and input (URL)."""
    return json.dumps(
        {
            "outputs": [
                {
                    "name": a.name,
                    "path": a.path,
                    "url": url,
                    "maxBytes": max_bytes(a),
                }
                for a, url in outputs
            ],
            "inputs": [{"name": a.name, "url": url} for a, url in inputs],
            "maxTotalBytes": max_total_bytes,
        },
        sort_keys=True,
    )


def max_bytes(artifact: OutputArtifact) -> int:
    return DEFAULT_ARTIFACT_MAX_BYTES if artifact.max_bytes is None else artifact.max_bytes


# -- records -------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class ArtifactRow:
    id: uuid.UUID
    namespace: str
    workflow_instance_id: uuid.UUID
    task_name: str
    attempt: int
    name: str
    integration_name: str
    bucket: str
    object_key: str
    max_bytes: int
    size_bytes: int | None
    created_at: dt.datetime
    stored_at: dt.datetime | None
    deleted_at: dt.datetime | None


async def insert_output_rows(
    conn: AsyncConnection[Any],
    *,
    namespace: str,
    instance_uid: uuid.UUID,
    task: str,
    attempt: int,
    integration: str,
    bucket: str,
    outputs: Sequence[tuple[OutputArtifact, str]],
) -> None:
    """One row per output artifact of an attempt (its key), before its Job: idempotent."""
    async with conn.transaction():
        for artifact, key in outputs:
            await conn.execute(
                "INSERT INTO task_execution_service.task_artifacts (namespace, "
                "workflow_instance_id, task_name, attempt, name, integration_name, bucket, "
                "object_key, max_bytes) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) "
                "ON CONFLICT (workflow_instance_id, task_name, attempt, name) DO NOTHING",
                (
                    namespace,
                    instance_uid,
                    task,
                    attempt,
                    artifact.name,
                    integration,
                    bucket,
                    key,
                    max_bytes(artifact),
                ),
            )


async def rows_of_attempt(
    conn: AsyncConnection[Any], instance_uid: uuid.UUID, task: str, attempt: int
) -> list[ArtifactRow]:
    async with conn.cursor(row_factory=class_row(ArtifactRow)) as cur:
        await cur.execute(
            "SELECT * FROM task_execution_service.task_artifacts "
            "WHERE workflow_instance_id = %s AND task_name = %s AND attempt = %s ORDER BY name",
            (instance_uid, task, attempt),
        )
        return await cur.fetchall()


async def stored_artifact(
    conn: AsyncConnection[Any], instance_uid: uuid.UUID, task: str, name: str
) -> ArtifactRow | None:
    """The artifact ``name`` of the task's latest attempt that stored it (checked when the
    attempt succeeded); None when no attempt did."""
    async with conn.cursor(row_factory=class_row(ArtifactRow)) as cur:
        await cur.execute(
            "SELECT * FROM task_execution_service.task_artifacts "
            "WHERE workflow_instance_id = %s AND task_name = %s AND name = %s "
            "AND stored_at IS NOT NULL ORDER BY attempt DESC LIMIT 1",
            (instance_uid, task, name),
        )
        return await cur.fetchone()


async def mark_stored(conn: AsyncConnection[Any], row_id: uuid.UUID, size: int) -> None:
    await conn.execute(
        "UPDATE task_execution_service.task_artifacts SET size_bytes = %s, stored_at = now() "
        "WHERE id = %s AND stored_at IS NULL",
        (size, row_id),
    )


async def mark_deleted(conn: AsyncConnection[Any], ids: Sequence[uuid.UUID]) -> None:
    await conn.execute(
        "UPDATE task_execution_service.task_artifacts SET deleted_at = now() "
        "WHERE id = ANY(%s) AND deleted_at IS NULL",
        (list(ids),),
    )


async def expired_rows(
    conn: AsyncConnection[Any],
    older_than: dt.datetime,
    *,
    skip: Sequence[tuple[str, str]] = (),
    limit: int = 1000,
) -> list[ArtifactRow]:
    """Rows whose object is still there and that are older than ``older_than``, but for
    those of the (namespace, Integration) pairs in ``skip``."""
    async with conn.cursor(row_factory=class_row(ArtifactRow)) as cur:
        await cur.execute(
            "SELECT * FROM task_execution_service.task_artifacts "
            "WHERE deleted_at IS NULL AND created_at < %s "
            "AND NOT (namespace || '/' || integration_name) = ANY(%s) "
            "ORDER BY created_at LIMIT %s",
            (older_than, [f"{ns}/{name}" for ns, name in skip], limit),
        )
        return await cur.fetchall()


# -- the operator's side ------------------------------------------------------------------
class Artifacts:
    """What the task-execution component does about an attempt's artifacts."""

    def __init__(self, db: Database, kube: Kube, settings: ArtifactSettings | None = None) -> None:
        self._db = db
        self._kube = kube
        self.settings = settings or ArtifactSettings()
        self._stores: dict[tuple[str, str], tuple[float, Store]] = {}

    async def store_for(self, namespace: str, name: str) -> Store:
        """The bucket of the s3 Integration ``name``, with the credentials of its Secret
        (read again after :data:`STORE_CACHE_SECONDS`)."""
        now = asyncio.get_running_loop().time()
        cached = self._stores.get((namespace, name))
        if cached is not None and now - cached[0] < STORE_CACHE_SECONDS:
            return cached[1]
        try:
            (integration,) = await credentials.for_task(self._db, namespace, [name])
        except credentials.IntegrationUnavailable as exc:
            raise ArtifactError(f"artifactRepository: {exc}") from exc
        secret = (
            await self._kube.read_secret(namespace, integration.secret_name)
            if integration.secret_name
            else None
        )
        if integration.secret_name and secret is None:
            raise ArtifactError(
                f"artifactRepository: Secret {integration.secret_name!r} of Integration "
                f"{name!r} does not exist"
            )
        store = await asyncio.to_thread(Store, StoreConfig.from_integration(integration, secret))
        self._stores[(namespace, name)] = (now, store)
        return store

    async def prepare(self, request: JobRequest) -> JobRequest:
        """The request with its artifacts resolved: a row per output (before the Job), a
        presigned PUT per output and GET per input. Raises ArtifactError when they cannot
        be (no repository, an input no upstream attempt stored, an unusable Integration)."""
        outputs = tuple(request.template.output_artifacts or ())
        inputs = request.input_artifacts
        if not outputs and not inputs:
            return request
        repository = request.artifact_repository
        if repository is None:
            raise ArtifactError(
                "the task has artifacts, but its workflow sets no artifactRepository"
            )
        instance_uid = uuid.UUID(request.instance_uid)
        found: list[ArtifactRow] = []
        async with self._db.connection(COMPONENT) as conn:
            for artifact in inputs:
                task, name = artifact.source
                row = await stored_artifact(conn, instance_uid, task, name)
                where = f"input artifact {artifact.name!r} ({artifact.from_})"
                if row is None:
                    raise ArtifactError(
                        f"{where}: task {task!r} stored no artifact {name!r} (it did not "
                        "succeed, was skipped, or does not declare it)"
                    )
                if row.deleted_at is not None:
                    raise ArtifactError(
                        f"{where}: its object was deleted at {row.deleted_at:%Y-%m-%d %H:%M} UTC "
                        "(artifact retention)"
                    )
                found.append(row)
        store = await self.store_for(request.namespace, repository)
        lifetime = url_lifetime(request.timeout_seconds)
        keyed = [
            (
                a,
                object_key(
                    store.config.prefix,
                    request.namespace,
                    request.instance_uid,
                    request.task,
                    request.attempt,
                    a.name,
                ),
            )
            for a in outputs
        ]
        if keyed:
            async with self._db.connection(COMPONENT) as conn:
                await insert_output_rows(
                    conn,
                    namespace=request.namespace,
                    instance_uid=instance_uid,
                    task=request.task,
                    attempt=request.attempt,
                    integration=repository,
                    bucket=store.bucket,
                    outputs=keyed,
                )
        puts = [(a, store.presign_put(key, lifetime)) for a, key in keyed]
        gets = []
        for artifact, row in zip(inputs, found, strict=True):
            source = (
                store
                if row.integration_name == repository
                else await self.store_for(request.namespace, row.integration_name)
            )
            gets.append((artifact, source.presign_get(row.object_key, lifetime)))
        plan = plan_document(puts, gets, max_total_bytes=self.settings.artifact_attempt_max_bytes)
        return dataclasses.replace(
            request,
            artifacts=JobArtifacts(
                image=self.settings.artifacts_image,
                secret_name=f"{request.name}-artifacts",
                plan=plan,
                inputs=tuple((a.name, a.path) for a in inputs),
                wrap=bool(outputs),
            ),
        )

    async def verify(self, instance_uid: uuid.UUID, task: str, attempt: int) -> str | None:
        """Check the objects of an attempt whose Job completed: each recorded with its size,
        or the reason the attempt fails instead (one missing, or over its limit: deleted)."""
        async with self._db.connection(COMPONENT) as conn:
            rows = await rows_of_attempt(conn, instance_uid, task, attempt)
        pending = [r for r in rows if r.stored_at is None and r.deleted_at is None]
        if not pending:
            return None
        try:
            store = await self.store_for(pending[0].namespace, pending[0].integration_name)
            sizes = [await asyncio.to_thread(store.size, r.object_key) for r in pending]
        except ArtifactError as exc:
            return f"output artifacts could not be checked: {exc}"
        problems = []
        for row, size in zip(pending, sizes, strict=True):
            where = f"s3://{row.bucket}/{row.object_key}"
            if size is None:
                problems.append(f"output artifact {row.name!r} was not stored ({where} is missing)")
            elif size > row.max_bytes:
                problems.append(
                    f"output artifact {row.name!r} is {size} bytes, over its limit of "
                    f"{row.max_bytes} bytes (deleted)"
                )
        if problems:
            too_big = [
                r for r, size in zip(pending, sizes, strict=True) if (size or 0) > r.max_bytes
            ]
            if too_big:
                with contextlib.suppress(ArtifactError):
                    await asyncio.to_thread(store.delete, [r.object_key for r in too_big])
                    async with self._db.connection(COMPONENT) as conn:
                        await mark_deleted(conn, [r.id for r in too_big])
            return "; ".join(problems)
        async with self._db.connection(COMPONENT) as conn:
            for row, size in zip(pending, sizes, strict=True):
                assert size is not None
                await mark_stored(conn, row.id, size)
        return None

    async def retention(self, stop: asyncio.Event) -> None:
        """Run :func:`run_artifact_retention` with this operator's Integrations."""
        await run_artifact_retention(self._db, self.store_for, stop, self.settings)


# -- retention -----------------------------------------------------------------------------
#: Gives the Store of an Integration (namespace, name); raises ArtifactError when it cannot.
StoreFor = Callable[[str, str], Awaitable[Store]]


async def delete_expired(db: Database, store_for: StoreFor, older_than: dt.datetime) -> int:
    """Delete the objects of rows older than ``older_than`` and mark the rows deleted;
    returns how many. An Integration that cannot be reached keeps its rows for the next
    run (logged), the others go on."""
    deleted = 0
    skipped: set[tuple[str, str]] = set()
    while True:
        async with db.connection(COMPONENT) as conn:
            rows = await expired_rows(conn, older_than, skip=sorted(skipped))
        if not rows:
            return deleted
        groups: dict[tuple[str, str, str], list[ArtifactRow]] = {}
        for row in rows:
            groups.setdefault((row.namespace, row.integration_name, row.bucket), []).append(row)
        for (namespace, integration, _), group in groups.items():
            try:
                store = await store_for(namespace, integration)
                await asyncio.to_thread(store.delete, [r.object_key for r in group])
            except ArtifactError as exc:
                logger.warning(
                    "artifact retention: cannot delete %d objects of Integration %s/%s (%s); "
                    "trying again on the next run",
                    len(group),
                    namespace,
                    integration,
                    exc,
                )
                skipped.add((namespace, integration))
                continue
            async with db.connection(COMPONENT) as conn:
                await mark_deleted(conn, [r.id for r in group])
            deleted += len(group)


async def run_artifact_retention(
    db: Database, store_for: StoreFor, stop: asyncio.Event, settings: ArtifactSettings
) -> None:
    """Every ``artifact_retention_interval_seconds``, delete the artifacts older than
    ``artifact_retention_days`` (0 keeps all)."""
    if settings.artifact_retention_days <= 0:
        return
    while not stop.is_set():
        try:
            async with db.connection(COMPONENT) as conn:
                row = await (await conn.execute("SELECT now()")).fetchone()
            assert row is not None
            cutoff = row[0] - dt.timedelta(days=settings.artifact_retention_days)
            deleted = await delete_expired(db, store_for, cutoff)
            if deleted:
                logger.info("artifact retention: deleted %d objects", deleted)
        except Exception as exc:
            logger.warning("artifact retention failed (%s); trying again later", exc)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(settings.artifact_retention_interval_seconds):
                await stop.wait()
