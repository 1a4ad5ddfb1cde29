"""The import layers of DESIGN.md hold, and the check run by ``make check`` catches a breach."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def _lint_imports(source_root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", "--config", str(ROOT / "pyproject.toml")],
        cwd=source_root,
        env={"PYTHONPATH": str(source_root), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_the_source_tree_keeps_its_layers() -> None:
    result = _lint_imports(ROOT / "operator")
    assert result.returncode == 0, result.stdout + result.stderr


def test_an_upward_import_breaks_the_check(tmp_path: Path) -> None:
    tree = tmp_path / "operator"
    shutil.copytree(
        ROOT / "operator" / "plait", tree / "plait", ignore=shutil.ignore_patterns("__pycache__")
    )
    # The kernel reaching up into a component, as kernel/kube.py once did.
    (tree / "plait" / "kernel" / "upward.py").write_text(
        "from plait.observability.metrics import time_kubernetes_api_call\n"
    )
    result = _lint_imports(tree)
    assert result.returncode != 0
    assert "plait.kernel.upward -> plait.observability.metrics" in result.stdout
