"""Schemathesis against a real ``plait api`` (a real PostgreSQL behind it), from the
document the process serves at ``/openapi.json``.

Every check is on: no 5xx, and every answer (status, content type, headers, body) as
documented; data the document allows is accepted, data it forbids is refused, except
where the document cannot say what is valid (schemathesis.toml and schemathesis_hooks.py
say where and why). The example count is bounded: about 25 s of CPU.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.api.conftest import PROCESS_TOKEN

MAX_EXAMPLES = 30


@pytest.mark.slow
def test_schemathesis_finds_no_5xx_and_no_undocumented_answer(
    start_api: Callable[..., int], migrated_database: str, tmp_path: Path
) -> None:
    port = start_api(migrated_database)
    here = Path(__file__).parent
    schemathesis = Path(sys.executable).with_name("schemathesis")
    run = subprocess.run(
        [
            str(schemathesis),
            "--config-file",
            str(here / "schemathesis.toml"),
            "run",
            f"http://127.0.0.1:{port}/openapi.json",
            "--header",
            f"Authorization: Bearer {PROCESS_TOKEN}",
            "--max-examples",
            str(MAX_EXAMPLES),
            "--workers",
            "1",
            "--seed",
            "1",
            "--no-color",
        ],
        capture_output=True,
        text=True,
        timeout=240,
        cwd=tmp_path,
        env={
            **os.environ,
            "SCHEMATHESIS_HOOKS": str(Path(__file__).with_name("schemathesis_hooks.py")),
        },
    )
    assert run.returncode == 0, run.stdout[-20000:] + run.stderr[-5000:]
