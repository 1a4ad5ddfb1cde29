"""What the operator's process loads: libraries only some runs need wait until they do."""

from __future__ import annotations

import subprocess
import sys


def _modules_after_importing(module: str) -> set[str]:
    program = f"import sys, {module}; print(' '.join(sys.modules))"
    out = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    return {name.split(".")[0] for name in out.split()}


def test_the_operator_loads_no_s3_client_until_an_artifact_or_check_needs_one() -> None:
    # boto3 and botocore are about 7 MiB of every operator, though only runs with
    # artifacts and s3 Integrations' checks use them.
    loaded = _modules_after_importing("plait.controller.app")
    assert "kopf" in loaded  # the probe sees what the operator imports
    assert not loaded & {"boto3", "botocore", "s3transfer"}
