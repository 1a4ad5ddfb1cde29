"""What the operator loads of the Kubernetes client before its first task."""

from __future__ import annotations

import subprocess
import sys

CHECK = """
import sys
from plait.kernel.kube import load_client_modules
apis = ("core_v1_api", "batch_v1_api", "custom_objects_api")
modules = [f"kubernetes.client.api.{api}" for api in apis] + ["kubernetes.client.models.v1_pod"]
before = [m for m in modules if m in sys.modules]
load_client_modules()
after = [m for m in modules if m in sys.modules]
print(len(before), len(after))
"""


def test_the_api_classes_and_their_models_are_imported_up_front() -> None:
    # A fresh interpreter: the client imports its API modules on first use.
    out = subprocess.run(
        [sys.executable, "-c", CHECK], check=True, capture_output=True, text=True
    ).stdout
    assert out.split() == ["0", "4"]
