"""manifests/ is the chart rendered by hack/render-manifests.py, and must not drift."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.install.conftest import ROOT, Helm, parse


def test_manifests_match_the_chart(helm: Helm) -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "hack" / "render-manifests.py"), "--check"],
        capture_output=True,
        text=True,
        env={**os.environ, "PLAIT_K8S_BIN_DIR": str(helm.binary.parent)},
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout[-5000:] + proc.stderr


def test_manifests_content() -> None:
    files = sorted(p.name for p in (ROOT / "manifests").iterdir())
    assert files == ["00-namespace.yaml", "10-crds.yaml", "20-plait.yaml"]
    namespace = parse((ROOT / "manifests" / "00-namespace.yaml").read_text())
    assert namespace[0]["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    crds = parse((ROOT / "manifests" / "10-crds.yaml").read_text())
    assert len(crds) == len(list((ROOT / "crds").glob("*.yaml")))
    docs = parse((ROOT / "manifests" / "20-plait.yaml").read_text())
    kinds = {d["kind"] for d in docs}
    assert {"Deployment", "ClusterRole", "Job", "PodDisruptionBudget", "NetworkPolicy"} <= kinds
    # No webhook, no bundled database, nothing only Helm understands, everything namespaced
    # objects in `plait`.
    assert not kinds & {"ValidatingWebhookConfiguration", "StatefulSet", "Secret"}
    for doc in docs:
        assert not any(k.startswith("helm.sh/hook") for k in doc["metadata"].get("annotations", {}))
        if doc["kind"] not in {"ClusterRole", "ClusterRoleBinding"}:
            assert doc["metadata"]["namespace"] == "plait", doc["metadata"]["name"]
