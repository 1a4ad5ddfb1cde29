"""What a task receives of an Integration, and the secretRef check against the catalog,
on the real schema as the integration component's own role."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any, cast

import pytest

from plait.admission.review import review
from plait.integration import repository
from plait.integration.credentials import (
    IntegrationUnavailable,
    SecretItem,
    TaskIntegration,
    for_task,
)
from plait.integration.handlers import IntegrationStore
from plait.kernel.components import component_by_name
from plait.kernel.config import Settings
from plait.kernel.database import Database
from plait.kernel.kube import Kube
from plait.resources.integration import IntegrationSpec
from plait.resources.stores import ObjectRef, OperatorContext


@pytest.fixture
async def db(component_dsns: dict[str, str]) -> AsyncIterator[Database]:
    environ = {"PLAIT_DATABASE_URL_INTEGRATION": component_dsns["integration"]}
    async with await Database.open(
        Settings(database_pool_min=1), [component_by_name("integration")], environ=environ
    ) as database:
        yield database


async def apply(db: Database, name: str, spec: dict[str, Any]) -> tuple[str, str, str]:
    """Reconcile an Integration the way the operator does: (status, reason, message)."""
    ctx = OperatorContext(db, cast(Kube, None))  # stores of this kind make no Kubernetes call
    ref = ObjectRef("ns", name, str(uuid.uuid4()), 1)
    applied = await IntegrationStore().apply(ctx, ref, IntegrationSpec.model_validate(spec))
    return applied.condition_status, applied.reason, applied.message


async def test_secret_keys_the_type_does_not_declare_are_refused_and_not_stored(
    db: Database,
) -> None:
    status, reason, message = await apply(
        db,
        "chat",
        {
            "type": "slack",
            "secretRef": {"name": "slack", "keys": {"token": "bot-token", "webhookSecret": "s"}},
        },
    )
    assert (status, reason) == ("False", "InvalidSecretRef")
    assert message == (
        "spec.secretRef.keys.webhookSecret: 'webhookSecret' is not a secret key of type "
        "'slack' (its secret keys: token, signingSecret)"
    )
    async with db.connection("integration") as conn:
        assert await repository.latest_integration(conn, "ns", "chat") is None


async def test_a_secret_ref_on_a_type_without_secret_keys_is_refused(db: Database) -> None:
    async with db.connection("integration") as conn:
        await conn.execute(
            "INSERT INTO integration_service.integration_definitions "
            "(type, display_name, settings_schema) VALUES ('plain', 'Plain', '{}')"
        )
    status, reason, message = await apply(
        db, "p", {"type": "plain", "secretRef": {"name": "creds"}}
    )
    assert (status, reason) == ("False", "InvalidSecretRef")
    assert message == (
        "spec.secretRef: type 'plain' has no secret keys, so there is nothing to read from a "
        "Secret: remove secretRef"
    )


async def test_a_task_gets_settings_and_where_each_secret_key_is(db: Database) -> None:
    accepted = [
        await apply(
            db,
            "lake",
            {
                "type": "s3",
                "settings": {"bucket": "lake", "region": "eu-west-1"},
                "secretRef": {"name": "aws", "keys": {"accessKeyId": "AWS_ACCESS_KEY_ID"}},
            },
        ),
        await apply(
            db,
            "notifier",
            {
                "type": "http",
                "settings": {"baseUrl": "https://hooks.example.com"},
                "secretRef": {"name": "notifier-credentials"},
            },
        ),
        await apply(db, "open", {"type": "http", "settings": {"baseUrl": "http://x"}}),
    ]
    assert [a[:2] for a in accepted] == [("True", "Accepted")] * 3
    found = await for_task(db, "ns", ["notifier", "lake", "open"])
    assert found == [
        TaskIntegration(
            "notifier",
            "http",
            {"baseUrl": "https://hooks.example.com"},
            "notifier-credentials",
            (SecretItem("token", "token"),),
        ),
        TaskIntegration(
            "lake",
            "s3",
            {"bucket": "lake", "region": "eu-west-1"},
            "aws",
            (
                SecretItem("accessKeyId", "AWS_ACCESS_KEY_ID"),
                SecretItem("secretAccessKey", "secretAccessKey"),
            ),
        ),
        TaskIntegration("open", "http", {"baseUrl": "http://x"}, None, ()),
    ]


async def test_a_missing_or_deleted_integration_is_a_clear_error(db: Database) -> None:
    with pytest.raises(IntegrationUnavailable, match="'ghost' does not exist in namespace 'ns'"):
        await for_task(db, "ns", ["ghost"])
    await apply(db, "gone", {"type": "http", "settings": {"baseUrl": "http://x"}})
    async with db.connection("integration") as conn:
        await repository.delete_integration(conn, "ns", "gone")
    with pytest.raises(IntegrationUnavailable, match="'gone' does not exist"):
        await for_task(db, "ns", ["gone"])


async def test_admission_refuses_secret_keys_the_type_does_not_declare() -> None:
    async def read(namespace: str, wanted: set[tuple[str, str]]) -> dict[Any, Any]:
        return {}

    async def authorize(user: Any, namespace: str, need: Any) -> bool:
        return True

    def request(secret_ref: dict[str, Any]) -> dict[str, Any]:
        return {
            "uid": "u",
            "operation": "CREATE",
            "namespace": "ns",
            "userInfo": {"username": "author"},
            "object": {
                "apiVersion": "plait.dev/v1alpha1",
                "kind": "Integration",
                "metadata": {"name": "lake"},
                "spec": {"type": "s3", "settings": {"bucket": "b"}, "secretRef": secret_ref},
            },
        }

    refused = await review(request({"name": "aws", "keys": {"accessKey": "id"}}), read, authorize)
    assert refused["allowed"] is False
    assert refused["status"] == {
        "code": 422,
        "message": "spec.secretRef.keys.accessKey: 'accessKey' is not a secret key of type "
        "'s3' (its secret keys: accessKeyId, secretAccessKey)",
    }
    renamed = request({"name": "aws", "keys": {"accessKeyId": "id"}})
    assert (await review(renamed, read, authorize))["allowed"] is True
