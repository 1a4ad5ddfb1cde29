"""Security scan of what the chart and manifests/ install, with checkov (pinned).

Each render is scanned on its own: checkov's graph checks (for example "every pod has a
NetworkPolicy") would otherwise count an object from one render for another. A finding is
either fixed in the chart or suppressed with its reason, in .checkov.yaml (chart-wide
decisions) or in a checkov.io/skipN annotation on the one object it concerns.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.install.conftest import CHART, KUBE_VERSION, PRODUCTION_VALUES, ROOT, Helm, parse

CONFIG = ROOT / ".checkov.yaml"


def scan(checkov: Path, target: Path) -> subprocess.Popen[str]:
    env = {
        **os.environ,
        # Offline: no download of external checks or of the platform's check mappings.
        "BC_SKIP_MAPPING": "TRUE",
        "CHECKOV_RUN_SCA_PACKAGE_SCAN_V2": "false",
    }
    cmd = [str(checkov), "-d", str(target), "--config-file", str(CONFIG)]
    cmd += ["--skip-download", "-o", "json"]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def results(proc: subprocess.Popen[str]) -> dict[str, Any]:
    out, err = proc.communicate(timeout=300)
    assert out.strip(), f"checkov printed nothing: {err[-2000:]}"
    data = json.loads(out)
    reports = data if isinstance(data, list) else [data]
    assert [r["check_type"] for r in reports] == ["kubernetes"], err[-2000:]
    return reports[0]


@pytest.mark.slow
def test_checkov_finds_nothing_unexplained(checkov: Path, helm: Helm, tmp_path: Path) -> None:
    targets = {"manifests": ROOT / "manifests"}
    renders = {
        "default values": [],
        "production values": [
            "-f", str(PRODUCTION_VALUES),
            "--set", "metrics.serviceMonitor.enabled=true",
        ],
        "namespaced, cert-manager": [
            "--set", "operator.allNamespaces=false",
            "--set", "webhook.certManager.enabled=true",
            "--set", "api.tokenSecretName=plait-api-token",
        ],
    }  # fmt: skip
    for name, extra in renders.items():
        folder = tmp_path / name.replace(" ", "-").replace(",", "")
        folder.mkdir()
        args = ["template", "plait", str(CHART), "-n", "plait", "--kube-version", KUBE_VERSION]
        rendered = helm.run(*args, *extra).stdout
        (folder / "plait.yaml").write_text(rendered)
        targets[name] = folder
    running = {name: scan(checkov, target) for name, target in targets.items()}
    failures = {}
    for name, proc in running.items():
        report = results(proc)
        summary = report["summary"]
        assert summary["parsing_errors"] == 0, name
        assert summary["passed"] > 100, f"{name}: checkov checked almost nothing: {summary}"
        failed = report["results"]["failed_checks"]
        if failed:
            failures[name] = [
                f"{c['check_id']} {c['check_name']} on {c['resource']}" for c in failed
            ]
    assert not failures, json.dumps(failures, indent=2)


def test_checkov_suppressions_have_reasons(helm: Helm) -> None:
    """Every suppressed check says why, in .checkov.yaml and in the objects' annotations."""
    lines = [ln for ln in CONFIG.read_text().splitlines() if re.match(r"^\s+- CKV", ln)]
    assert lines, "no skip-check list in .checkov.yaml"
    for line in lines:
        check, _, reason = line.partition("#")
        assert re.fullmatch(r"\s+- CKV2?_K8S_\d+\s+", check), line
        assert len(reason.strip()) > 40, f"give the reason for {check.strip()} on its line"
    annotated = 0
    for doc in parse(helm.template().stdout) + parse(
        helm.template(values=[PRODUCTION_VALUES]).stdout
    ):
        for key, value in (doc["metadata"].get("annotations") or {}).items():
            if key.startswith("checkov.io/skip"):
                annotated += 1
                check, _, reason = value.partition("=")
                assert re.fullmatch(r"CKV2?_K8S_\d+", check), value
                assert len(reason) > 40, f"{doc['metadata']['name']}: {value}"
    assert annotated >= 1
