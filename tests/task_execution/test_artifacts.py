"""Artifacts against a real S3-compatible server (versitygw) and the real schema.

The presigned URLs are made by boto3 and used by the real ``plait-artifacts`` binary, run
here as a process with a plan file, so the limits and messages are the ones a task's Pod
would get. The operator's side (rows, plan, checks, retention) runs on the migrated
database as the task-execution role. Reading the repository's Secret is the API server's
part: here the Store is made from the server's credentials (the real-node tests read a
real Secret).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from plait.admission.access import needs
from plait.integration.credentials import SecretItem, TaskIntegration
from plait.kernel.components import component_by_name
from plait.kernel.config import Settings
from plait.kernel.database import Database
from plait.resources.common import ContainerTemplate, OutputArtifact
from plait.resources.workflow import InputArtifact, WorkflowDefinitionSpec
from plait.task_execution.artifacts import (
    ArtifactError,
    Artifacts,
    ArtifactSettings,
    Store,
    StoreConfig,
    delete_expired,
    insert_output_rows,
    object_key,
    url_lifetime,
)
from plait.task_execution.jobs import JobRequest, artifact_secret, build_job
from plait.testing.s3 import S3Server
from tests.fixtures.s3 import BUCKET


def integration(server: S3Server, *, prefix: str = "") -> TaskIntegration:
    return TaskIntegration(
        name="store",
        type="s3",
        settings={"bucket": BUCKET, "endpoint": server.endpoint, "prefix": prefix},
        secret_name="store-credentials",
        secret_items=(
            SecretItem("accessKeyId", "access"),
            SecretItem("secretAccessKey", "secret"),
        ),
    )


def store_of(server: S3Server, *, prefix: str = "") -> Store:
    secret = {"access": server.access_key, "secret": server.secret_key}
    return Store(StoreConfig.from_integration(integration(server, prefix=prefix), secret))


def http(method: str, url: str, data: bytes | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=data, method=method)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


# -- the store -----------------------------------------------------------------------------
def test_a_presigned_put_reaches_only_its_own_key_and_a_get_reads_it_back(
    s3_server: S3Server,
) -> None:
    store = store_of(s3_server, prefix="runs")
    key = object_key(store.config.prefix, "ns", "uid-1", "make", 2, "report")
    assert key == "runs/ns/uid-1/make/2/report"
    put = store.presign_put(key, 60)
    data = os.urandom(10_000)
    assert http("PUT", put, data)[0] == 200
    other = put.replace("/report?", "/other?")
    status, body = http("PUT", other, b"x")
    assert status == 403, "a URL signs one key: another key is refused"
    assert b"SignatureDoesNotMatch" in body
    assert http("GET", store.presign_get(key, 60)) == (200, data)
    assert store.size(key) == 10_000
    assert s3_server.objects(BUCKET)[key] == 10_000
    store.delete([key, "runs/never/stored"])
    assert store.size(key) is None


def test_a_presigned_url_stops_working_when_it_expires(s3_server: S3Server) -> None:
    store = store_of(s3_server)
    url = store.presign_put("expiring", 1)
    time.sleep(2.1)
    status, body = http("PUT", url, b"late")
    assert status == 403
    assert b"expired" in body.lower()
    assert store.size("expiring") is None


def test_the_stores_refusals_come_out_as_artifact_errors_that_say_what_was_done(
    s3_server: S3Server,
) -> None:
    secret = {"access": s3_server.access_key, "secret": "not-the-secret"}
    store = Store(StoreConfig.from_integration(integration(s3_server), secret))
    with pytest.raises(ArtifactError, match=r"reading the size of s3://.*/some/key: .*403"):
        store.size("some/key")
    with pytest.raises(ArtifactError, match=r"deleting 1 objects from "):
        store.delete(["some/key"])


def test_url_lifetime_is_the_timeout_and_an_hour_at_most_a_week() -> None:
    assert url_lifetime(600) == 600 + 3600
    assert url_lifetime(None) == 7 * 24 * 3600
    assert url_lifetime(7 * 24 * 3600) == 7 * 24 * 3600


def test_a_repository_that_is_not_s3_or_lacks_a_key_is_refused(s3_server: S3Server) -> None:
    slack = TaskIntegration("chat", "slack", {}, "chat", (SecretItem("token", "token"),))
    with pytest.raises(ArtifactError, match="Integration 'chat' is of type 'slack', not s3"):
        StoreConfig.from_integration(slack, {"token": "t"})
    with pytest.raises(ArtifactError, match="Secret 'store-credentials' has no key 'secret'"):
        StoreConfig.from_integration(integration(s3_server), {"access": "a"})


# -- plait-artifacts, the program a task's Pod runs ---------------------------------------
def run_tool(
    artifacts_bin: Path, tmp_path: Path, plan: dict[str, Any], *args: str
) -> tuple[int, str]:
    """Run plait-artifacts with ``plan``; (exit code, termination message)."""
    plan_file = tmp_path / "plan.json"
    plan_file.write_text(json.dumps(plan))
    log = tmp_path / "termination-log"
    log.write_text("")
    action, *rest = args
    proc = subprocess.run(
        [str(artifacts_bin / "plait-artifacts"), action, str(plan_file), *rest],
        env={**os.environ, "PLAIT_ARTIFACTS_TERMINATION_LOG": str(log)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    return proc.returncode, log.read_text()


def test_run_uploads_the_outputs_after_the_command_succeeds(
    s3_server: S3Server, artifacts_bin: Path, tmp_path: Path
) -> None:
    store = store_of(s3_server)
    out = tmp_path / "out.bin"
    plan = {
        "outputs": [
            {"name": "data", "path": str(out), "url": store.presign_put("t1/data", 60)},
            {
                "name": "empty",
                "path": str(tmp_path / "empty"),
                "url": store.presign_put("t1/e", 60),
            },
        ],
        "inputs": [],
        "maxTotalBytes": 1 << 20,
    }
    script = f"head -c 50000 /dev/urandom > {out}; : > {tmp_path / 'empty'}; echo '{{}}'"
    code, message = run_tool(artifacts_bin, tmp_path, plan, "run", "--", "sh", "-c", script)
    assert (code, message) == (0, "")
    assert http("GET", store.presign_get("t1/data", 60)) == (200, out.read_bytes())
    assert store.size("t1/e") == 0


def test_a_file_over_its_limit_fails_the_run_before_anything_is_uploaded(
    s3_server: S3Server, artifacts_bin: Path, tmp_path: Path
) -> None:
    store = store_of(s3_server)
    small, big = tmp_path / "small", tmp_path / "big"
    plan = {
        "outputs": [
            {"name": "small", "path": str(small), "url": store.presign_put("t2/small", 60)},
            {
                "name": "big",
                "path": str(big),
                "url": store.presign_put("t2/big", 60),
                "maxBytes": 4096,
            },
        ],
        "inputs": [],
        "maxTotalBytes": 1 << 20,
    }
    script = f"echo hi > {small}; head -c 5000 /dev/zero > {big}"
    code, message = run_tool(artifacts_bin, tmp_path, plan, "run", "--", "sh", "-c", script)
    assert code == 1
    assert message == f'output artifact "big": {big} is 5000 bytes, over its limit of 4096 bytes'
    assert store.size("t2/small") is None, "nothing is uploaded when one artifact is refused"
    assert store.size("t2/big") is None


def test_the_attempt_total_limit_and_a_missing_file_fail_clearly(
    s3_server: S3Server, artifacts_bin: Path, tmp_path: Path
) -> None:
    store = store_of(s3_server)
    a, b = tmp_path / "a", tmp_path / "b"
    plan = {
        "outputs": [
            {"name": "a", "path": str(a), "url": store.presign_put("t3/a", 60)},
            {"name": "b", "path": str(b), "url": store.presign_put("t3/b", 60)},
        ],
        "inputs": [],
        "maxTotalBytes": 1500,
    }
    script = f"head -c 1000 /dev/zero > {a}; head -c 1000 /dev/zero > {b}"
    code, message = run_tool(artifacts_bin, tmp_path, plan, "run", "--", "sh", "-c", script)
    assert (code, message) == (
        1,
        "output artifacts: 2000 bytes in all, over the limit of 1500 bytes per attempt",
    )
    b.unlink()
    code, message = run_tool(artifacts_bin, tmp_path, plan, "run", "--", "true")
    assert (code, message) == (1, f'output artifact "b": {b} does not exist')


def test_a_failing_command_keeps_its_exit_code_and_message_and_uploads_nothing(
    s3_server: S3Server, artifacts_bin: Path, tmp_path: Path
) -> None:
    store = store_of(s3_server)
    out = tmp_path / "out"
    plan = {
        "outputs": [{"name": "o", "path": str(out), "url": store.presign_put("t4/o", 60)}],
        "inputs": [],
        "maxTotalBytes": 0,
    }
    log = tmp_path / "termination-log"
    script = f"echo partial > {out}; echo 'disk full' > {log}; exit 7"
    code, message = run_tool(artifacts_bin, tmp_path, plan, "run", "--", "sh", "-c", script)
    assert (code, message) == (7, "disk full\n")
    assert store.size("t4/o") is None


def test_init_copies_itself_and_downloads_the_inputs(
    s3_server: S3Server, artifacts_bin: Path, tmp_path: Path
) -> None:
    store = store_of(s3_server)
    data = os.urandom(20_000)
    assert http("PUT", store.presign_put("t5/in", 60), data)[0] == 200
    shared = tmp_path / "shared"
    plan = {
        "outputs": [],
        "inputs": [{"name": "data", "url": store.presign_get("t5/in", 60)}],
        "maxTotalBytes": 0,
    }
    assert run_tool(artifacts_bin, tmp_path, plan, "init", str(shared)) == (0, "")
    assert (shared / "in" / "data").read_bytes() == data
    copied = shared / "bin" / "plait-artifacts"
    assert copied.read_bytes() == (artifacts_bin / "plait-artifacts").read_bytes()
    assert os.access(copied, os.X_OK)

    plan["inputs"] = [{"name": "gone", "url": store.presign_get("t5/missing", 60)}]
    code, message = run_tool(artifacts_bin, tmp_path, plan, "init", str(shared))
    assert code == 1
    assert message.startswith(
        'input artifact "gone": the artifact store answered 404 Not Found: <?xml'
    )
    assert "NoSuchKey" in message
    assert "X-Amz-Signature" not in message


# -- the operator's side -------------------------------------------------------------------
class ServerArtifacts(Artifacts):
    """Artifacts whose repository Store is made from the test server's credentials (the
    operator reads them from the Integration's Secret through the API server)."""

    def __init__(self, db: Database, server: S3Server, settings: ArtifactSettings) -> None:
        super().__init__(db, None, settings)  # type: ignore[arg-type]
        self.server = server

    async def store_for(self, namespace: str, name: str) -> Store:
        if name != "store":
            raise ArtifactError(f"artifactRepository: Integration {name!r} does not exist")
        return store_of(self.server, prefix="plait/")


@pytest.fixture
async def db(component_dsns: dict[str, str]) -> AsyncIterator[Database]:
    environ = {"PLAIT_DATABASE_URL_TASK_EXECUTION": component_dsns["task_execution"]}
    async with await Database.open(
        Settings(database_pool_min=1), [component_by_name("task_execution")], environ=environ
    ) as database:
        yield database


SETTINGS = ArtifactSettings(artifacts_image="example/plait-artifacts:1")


def request_for(task: str, attempt: int, uid: str, **extra: Any) -> JobRequest:
    template = extra.pop("template", {"image": "busybox", "command": ["sh", "-c", "true"]})
    extra.setdefault("artifact_repository", "store")
    return JobRequest(
        namespace="ns",
        instance_name="run",
        instance_uid=uid,
        task=task,
        attempt=attempt,
        template=ContainerTemplate.model_validate(template),
        inputs={},
        timeout_seconds=300,
        **extra,
    )


async def test_an_attempt_plans_its_urls_records_its_objects_and_hands_them_downstream(
    db: Database, s3_server: S3Server
) -> None:
    artifacts = ServerArtifacts(db, s3_server, SETTINGS)
    uid = str(uuid.uuid4())
    make = request_for(
        "make",
        1,
        uid,
        template={
            "image": "busybox",
            "command": ["sh", "-c", "true"],
            "outputArtifacts": [{"name": "report", "path": "/tmp/report", "maxBytes": 100_000}],
        },
    )
    prepared = await artifacts.prepare(make)
    assert prepared.artifacts is not None
    plan = json.loads(prepared.artifacts.plan)
    key = f"plait/ns/{uid}/make/1/report"
    (output,) = plan["outputs"]
    assert (output["name"], output["path"], output["maxBytes"]) == (
        "report",
        "/tmp/report",
        100_000,
    )
    assert f"/{BUCKET}/{key}?" in output["url"]
    assert "X-Amz-Expires=3900" in output["url"], "the timeout (300 s) and an hour"
    assert plan["maxTotalBytes"] == SETTINGS.artifact_attempt_max_bytes
    assert await artifacts.prepare(make) is not None, "preparing again changes nothing"

    # Nothing downstream until the attempt succeeded and its object was checked.
    use = request_for(
        "use",
        1,
        uid,
        input_artifacts=(
            InputArtifact.model_validate(
                {"name": "data", "from": "tasks.make.artifacts.report", "path": "/in/data"}
            ),
        ),
    )
    with pytest.raises(ArtifactError, match="task 'make' stored no artifact 'report'"):
        await artifacts.prepare(use)
    assert await artifacts.verify(uuid.UUID(uid), "make", 1) == (
        f"output artifact 'report' was not stored (s3://{BUCKET}/{key} is missing)"
    )

    content = os.urandom(9_000)
    assert http("PUT", output["url"], content)[0] == 200
    assert await artifacts.verify(uuid.UUID(uid), "make", 1) is None
    async with db.connection("task_execution") as conn:
        row = await (
            await conn.execute(
                "SELECT size_bytes, stored_at IS NOT NULL, object_key, integration_name "
                "FROM task_execution_service.task_artifacts WHERE workflow_instance_id = %s",
                (uid,),
            )
        ).fetchone()
    assert row == (9_000, True, key, "store")

    downstream = await artifacts.prepare(use)
    assert downstream.artifacts is not None
    assert downstream.artifacts.inputs == (("data", "/in/data"),)
    assert not downstream.artifacts.wrap, "no outputs: the command runs as it is"
    (entry,) = json.loads(downstream.artifacts.plan)["inputs"]
    assert http("GET", entry["url"]) == (200, content)


async def test_an_object_over_its_limit_fails_the_attempt_and_is_deleted(
    db: Database, s3_server: S3Server
) -> None:
    """plait-artifacts refuses a large file, but the container holds the URL: the operator
    checks the stored object itself."""
    artifacts = ServerArtifacts(db, s3_server, SETTINGS)
    uid = str(uuid.uuid4())
    template = {
        "image": "busybox",
        "command": ["true"],
        "outputArtifacts": [{"name": "blob", "path": "/tmp/blob", "maxBytes": 10}],
    }
    prepared = await artifacts.prepare(request_for("t", 1, uid, template=template))
    assert prepared.artifacts is not None
    (output,) = json.loads(prepared.artifacts.plan)["outputs"]
    assert http("PUT", output["url"], b"x" * 11)[0] == 200
    assert await artifacts.verify(uuid.UUID(uid), "t", 1) == (
        "output artifact 'blob' is 11 bytes, over its limit of 10 bytes (deleted)"
    )
    assert store_of(s3_server).size(f"plait/ns/{uid}/t/1/blob") is None


async def test_a_task_with_artifacts_needs_a_repository_that_exists(
    db: Database, s3_server: S3Server
) -> None:
    artifacts = ServerArtifacts(db, s3_server, SETTINGS)
    template = {
        "image": "busybox",
        "command": ["true"],
        "outputArtifacts": [{"name": "x", "path": "/tmp/x"}],
    }
    uid = str(uuid.uuid4())
    with pytest.raises(ArtifactError, match="sets no artifactRepository"):
        await artifacts.prepare(
            request_for("t", 1, uid, template=template, artifact_repository=None)
        )
    with pytest.raises(ArtifactError, match="Integration 'gone' does not exist"):
        await artifacts.prepare(
            request_for("t", 1, uid, template=template, artifact_repository="gone")
        )
    plain = request_for("t", 1, uid)
    assert await artifacts.prepare(plain) is plain, "no artifacts: nothing to do"


async def test_retention_deletes_old_objects_and_keeps_their_rows(
    db: Database, s3_server: S3Server
) -> None:
    artifacts = ServerArtifacts(db, s3_server, SETTINGS)
    uid = str(uuid.uuid4())
    template = {
        "image": "busybox",
        "command": ["true"],
        "outputArtifacts": [{"name": "a", "path": "/tmp/a"}, {"name": "b", "path": "/tmp/b"}],
    }
    prepared = await artifacts.prepare(request_for("t", 1, uid, template=template))
    assert prepared.artifacts is not None
    for output in json.loads(prepared.artifacts.plan)["outputs"]:
        assert http("PUT", output["url"], b"payload")[0] == 200
    assert await artifacts.verify(uuid.UUID(uid), "t", 1) is None
    prefix = f"plait/ns/{uid}/t/1/"
    assert {k for k in s3_server.objects(BUCKET) if k.startswith(prefix)} == {
        prefix + "a",
        prefix + "b",
    }

    past = dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)
    assert await delete_expired(db, artifacts.store_for, past) == 0, "too young"
    future = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=5)
    assert await delete_expired(db, artifacts.store_for, future) == 2
    assert not [k for k in s3_server.objects(BUCKET) if k.startswith(prefix)]
    async with db.connection("task_execution") as conn:
        rows = await (
            await conn.execute(
                "SELECT name, deleted_at IS NOT NULL FROM task_execution_service.task_artifacts "
                "WHERE workflow_instance_id = %s ORDER BY name",
                (uid,),
            )
        ).fetchall()
    assert rows == [("a", True), ("b", True)]
    assert await delete_expired(db, artifacts.store_for, future) == 0, "deleted once"

    use = request_for(
        "use",
        1,
        uid,
        input_artifacts=(
            InputArtifact.model_validate(
                {"name": "a", "from": "tasks.t.artifacts.a", "path": "/in/a"}
            ),
        ),
    )
    with pytest.raises(ArtifactError, match=r"its object was deleted at .* \(artifact retention\)"):
        await artifacts.prepare(use)


# -- the Job -------------------------------------------------------------------------------
async def test_the_job_downloads_inputs_wraps_the_command_and_holds_no_url(
    db: Database, s3_server: S3Server
) -> None:
    artifacts = ServerArtifacts(db, s3_server, SETTINGS)
    uid = str(uuid.uuid4())
    base = request_for(
        "t",
        1,
        uid,
        template={
            "image": "busybox",
            "command": ["sh", "-c"],
            "args": ["cp /in/data /tmp/out"],
            "outputArtifacts": [{"name": "out", "path": "/tmp/out"}],
        },
    )
    prepared = await artifacts.prepare(base)
    assert prepared.artifacts is not None
    prepared = dataclass_replace_inputs(prepared)
    job = build_job(prepared)
    assert "X-Amz-Signature" not in json.dumps(job), "the URLs stay in the Secret"
    pod = job["spec"]["template"]["spec"]
    (init,) = pod["initContainers"]
    assert init["image"] == "example/plait-artifacts:1"
    assert init["command"] == [
        "/plait-artifacts",
        "init",
        "/var/run/plait/artifacts/plan/plan.json",
        "/var/run/plait/artifacts/shared",
    ]
    assert init["securityContext"] == pod["containers"][0]["securityContext"]
    main = pod["containers"][0]
    assert main["command"] == [
        "/var/run/plait/artifacts/bin/plait-artifacts",
        "run",
        "/var/run/plait/artifacts/plan/plan.json",
        "--",
        "sh",
        "-c",
    ]
    assert main["args"] == ["cp /in/data /tmp/out"]
    assert {"name": "plait-artifacts", "mountPath": "/in/data", "subPath": "in/data",
            "readOnly": True} in main["volumeMounts"]  # fmt: skip
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["plait-artifacts-plan"]["secret"]["secretName"] == f"{prepared.name}-artifacts"
    secret = artifact_secret(prepared)
    assert secret is not None
    assert secret["metadata"]["name"] == f"{prepared.name}-artifacts"
    assert prepared.artifacts is not None
    assert secret["stringData"]["plan.json"] == prepared.artifacts.plan


def dataclass_replace_inputs(request: JobRequest) -> JobRequest:
    """The request as if it also had the input ``data`` at /in/data."""
    assert request.artifacts is not None
    return dataclasses.replace(
        request,
        artifacts=dataclasses.replace(request.artifacts, inputs=(("data", "/in/data"),)),
    )


# -- the resources -------------------------------------------------------------------------
def workflow(*tasks: dict[str, Any], repository: bool = True) -> dict[str, Any]:
    spec: dict[str, Any] = {"tasks": list(tasks)}
    if repository:
        spec["artifactRepository"] = {"integration": "store"}
    return spec


PRODUCER: dict[str, Any] = {
    "name": "make",
    "template": {
        "image": "busybox",
        "command": ["sh", "-c", "date > /tmp/out"],
        "outputArtifacts": [{"name": "out", "path": "/tmp/out"}],
    },
}


def consumer(source: str = "tasks.make.artifacts.out", **extra: Any) -> dict[str, Any]:
    return {
        "name": "use",
        "dependencies": ["make"],
        "template": {"image": "busybox"},
        "inputArtifacts": [{"name": "data", "from": source, "path": "/in/data"}],
        **extra,
    }


def problems_of(spec: dict[str, Any]) -> str:
    with pytest.raises(ValidationError) as info:
        WorkflowDefinitionSpec.model_validate(spec)
    return str(info.value)


def test_a_valid_artifact_workflow_round_trips() -> None:
    spec = WorkflowDefinitionSpec.model_validate(workflow(PRODUCER, consumer()))
    assert spec.to_dict()["tasks"][1]["inputArtifacts"] == [
        {"name": "data", "from": "tasks.make.artifacts.out", "path": "/in/data"}
    ]
    assert spec.tasks[1].input_artifacts is not None
    assert spec.tasks[1].input_artifacts[0].source == ("make", "out")


def test_artifact_mistakes_are_refused_with_what_to_fix() -> None:
    assert "set artifactRepository.integration" in problems_of(workflow(PRODUCER, repository=False))
    assert "task 'make' is not one this task depends on" in problems_of(
        workflow(PRODUCER, consumer(dependencies=[]))
    )
    assert "task 'make' declares no outputArtifacts 'nope'" in problems_of(
        workflow(PRODUCER, consumer("tasks.make.artifacts.nope"))
    )
    no_command = {**PRODUCER, "template": {**PRODUCER["template"], "command": None}}
    assert "outputArtifacts need an explicit command" in problems_of(workflow(no_command))
    for path in ("/var/run/plait/x", "/dev/termination-log", "/tmp/../etc/x", "relative", "/d/"):
        bad = consumer()
        bad["inputArtifacts"][0]["path"] = path
        problems_of(workflow(PRODUCER, bad))


def test_the_artifact_repository_is_asked_for_like_a_tasks_integration() -> None:
    """Its credentials sign the tasks' URLs: its author must be allowed to use it."""
    spec = WorkflowDefinitionSpec.model_validate(workflow(PRODUCER, consumer()))
    assert [(n.path, n.permission()) for n in needs(spec)] == [
        ("spec.artifactRepository.integration", "use integrations.plait.dev/store")
    ]


async def test_retention_keeps_what_it_cannot_delete_and_goes_on_with_the_rest(
    db: Database, s3_server: S3Server
) -> None:
    """An Integration that cannot be used (here: gone) keeps its objects for the next run;
    the other Integrations' old objects are deleted all the same, even behind more of the
    unusable one's rows than retention reads at once (1,000)."""
    artifacts = ServerArtifacts(db, s3_server, SETTINGS)
    uid = uuid.uuid4()

    def outputs(n: int) -> list[tuple[OutputArtifact, str]]:
        return [
            (OutputArtifact(name=f"o{i}", path=f"/tmp/o{i}"), f"old/{uid}/o{i}") for i in range(n)
        ]

    async with db.connection("task_execution") as conn:
        # The unusable Integration's rows first (older), then three of a usable one.
        for integration, task, count in (("gone", "lost", 1001), ("store", "kept", 3)):
            await insert_output_rows(
                conn,
                namespace="ns",
                instance_uid=uid,
                task=task,
                attempt=1,
                integration=integration,
                bucket=BUCKET,
                outputs=outputs(count),
            )
    future = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=5)
    assert await delete_expired(db, artifacts.store_for, future) == 3
    async with db.connection("task_execution") as conn:
        rows = await (
            await conn.execute(
                "SELECT task_name, count(*) FILTER (WHERE deleted_at IS NOT NULL) "
                "FROM task_execution_service.task_artifacts WHERE workflow_instance_id = %s "
                "GROUP BY task_name ORDER BY task_name",
                (uid,),
            )
        ).fetchall()
    assert rows == [("kept", 3), ("lost", 0)]
