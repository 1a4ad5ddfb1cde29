"""Helpers for the install checks: helm, rendering the chart, and the scanning tools.

helm comes from the same folder as kubectl (``find_bin_dir``: hack/build-k8s.sh builds both).
The locally built helm has no default Kubernetes version compiled in, so every offline
render passes ``--kube-version`` (the chart's minimum); installs use the server's version.
"""

from __future__ import annotations

import os
import subprocess
import sys
import venv
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from plait.testing.cluster import find_bin_dir

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "plait"
VALUES_DIR = Path(__file__).parent / "values"
PRODUCTION_VALUES = CHART / "ci" / "production-values.yaml"
#: Every rule the chart grants each ServiceAccount, with the code that needs it.
RBAC_TABLE = CHART / "files" / "rbac.yaml"
# The oldest Kubernetes the chart supports (Chart.yaml kubeVersion): offline renders use it.
KUBE_VERSION = "1.29.0"
CHECKOV_VERSION = "3.3.30"


@dataclass(frozen=True)
class Helm:
    """The helm binary, with the cluster's kubeconfig when there is one."""

    binary: Path
    kubeconfig: Path | None = None

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        cmd = [str(self.binary), *args]
        if self.kubeconfig is not None:
            cmd.append(f"--kubeconfig={self.kubeconfig}")
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=600)
        if check and proc.returncode != 0:
            raise AssertionError(f"helm {' '.join(args)} failed:\n{proc.stderr}\n{proc.stdout}")
        return proc

    def template(
        self,
        *,
        values: Sequence[Path] = (),
        sets: Sequence[str] = (),
        namespace: str = "plait",
        release: str = "plait",
        check: bool = True,
    ) -> subprocess.CompletedProcess[str]:
        args = ["template", release, str(CHART), "--namespace", namespace]
        args += ["--kube-version", KUBE_VERSION]
        for v in values:
            args += ["-f", str(v)]
        for s in sets:
            args += ["--set", s]
        return self.run(*args, check=check)

    def render(self, **kwargs: Any) -> list[dict[str, Any]]:
        """The rendered objects (hooks included), parsed."""
        return parse(self.template(**kwargs).stdout)


Triple = tuple[str, str, str]
"""(API group, resource[/subresource], verb): one thing a rule allows."""


def table_triples(
    account: str, mode: str, *, scope: str | None = None, audited_only: bool = False
) -> set[Triple]:
    """What RBAC_TABLE grants ``account`` (operator, webhook) in ``mode`` (allNamespaces or
    namespaced), optionally only the rules of one scope (watched or cluster), or only those
    the audited run must use."""
    found: set[Triple] = set()
    for rule in yaml.safe_load(RBAC_TABLE.read_text())[account]:
        if rule.get("modes", "both") not in ("both", mode):
            continue
        if (scope is not None and rule["scope"] != scope) or (audited_only and rule.get("audit")):
            continue
        found |= {
            (g, r, v) for g in rule["apiGroups"] for r in rule["resources"] for v in rule["verbs"]
        }
    return found


def granted_triples(docs: list[dict[str, Any]]) -> set[Triple]:
    """What the Roles and ClusterRoles among ``docs`` grant, together."""
    return {
        (g, r, v)
        for doc in docs
        if doc["kind"] in {"Role", "ClusterRole"}
        for rule in doc["rules"]
        for g in rule["apiGroups"]
        for r in rule["resources"]
        for v in rule["verbs"]
    }


def parse(text: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(text) if d]


def find(docs: list[dict[str, Any]], kind: str, name_suffix: str = "") -> dict[str, Any]:
    """The one object of ``kind`` whose name ends with ``name_suffix``."""
    hits = [d for d in docs if d["kind"] == kind and d["metadata"]["name"].endswith(name_suffix)]
    assert len(hits) == 1, (
        f"expected one {kind} *{name_suffix}, got {[h['metadata'] for h in hits]}"
    )
    return hits[0]


@pytest.fixture(scope="session")
def helm_bin() -> Path:
    bin_dir = Path(os.environ["PLAIT_K8S_BIN_DIR"]) if "PLAIT_K8S_BIN_DIR" in os.environ else None
    return (bin_dir or find_bin_dir()) / "helm"


@pytest.fixture(scope="session")
def helm(helm_bin: Path) -> Helm:
    """helm for offline work (lint, template)."""
    return Helm(helm_bin)


@pytest.fixture(scope="session")
def checkov() -> Path:
    """checkov, pinned, in a virtualenv of its own under the project's cache.

    checkov pins dozens of libraries (among them an older ``packaging``), so it stays out
    of the project's own environment; the first run installs it from PyPI (about a minute).
    """
    cache = Path(
        os.environ.get("PLAIT_CACHE_DIR")
        or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "plait"
    )
    env_dir = (
        cache / "tools" / f"checkov-{CHECKOV_VERSION}-py{sys.version_info[0]}{sys.version_info[1]}"
    )
    exe = env_dir / "bin" / "checkov"
    if not exe.exists():
        venv.create(env_dir, with_pip=True, clear=True)
        subprocess.run(
            [str(env_dir / "bin" / "pip"), "install", "--quiet", f"checkov=={CHECKOV_VERSION}"],
            check=True,
            timeout=900,
        )
    return exe
