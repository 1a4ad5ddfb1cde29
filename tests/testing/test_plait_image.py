"""Plait's engine-less image holds what the Dockerfile promises, read from the archive itself.

Building needs root (a chroot) and Debian's apt; the archive is cached, so the install test
(tests/install/test_helm_realnode.py) reuses the one built here.
"""

from __future__ import annotations

import io
import json
import os
import tarfile
from functools import cache
from typing import Any

import pytest

from plait.testing.plait_image import IMAGE_REPOSITORY, USER, PlaitImage, build_plait_image

pytestmark = [
    pytest.mark.helm,
    pytest.mark.skipif(os.geteuid() != 0, reason="building the image needs root (chroot)"),
    pytest.mark.timeout(900),
]


@cache
def image() -> PlaitImage:
    return build_plait_image(progress=False)


def read(archive: tarfile.TarFile, name: str) -> bytes:
    member = archive.extractfile(name)
    assert member is not None, name
    return member.read()


def blob(archive: tarfile.TarFile, digest: str) -> bytes:
    return read(archive, f"blobs/sha256/{digest.removeprefix('sha256:')}")


@cache
def contents() -> tuple[dict[str, Any], list[dict[str, tarfile.TarInfo]]]:
    """The image config and, per layer (lowest first), its entries by path."""
    with tarfile.open(image().archive) as archive:
        (entry,) = json.loads(read(archive, "index.json"))["manifests"]
        assert entry["annotations"]["io.containerd.image.name"] == image().reference
        manifest = json.loads(blob(archive, entry["digest"]))
        config = json.loads(blob(archive, manifest["config"]["digest"]))
        layers = []
        for layer in manifest["layers"]:
            with tarfile.open(fileobj=io.BytesIO(blob(archive, layer["digest"]))) as t:
                layers.append({m.name: m for m in t.getmembers()})
    return config, layers


def top_layer_file(name: str) -> bytes:
    with tarfile.open(image().archive) as archive:
        (entry,) = json.loads(read(archive, "index.json"))["manifests"]
        manifest = json.loads(blob(archive, entry["digest"]))
        with tarfile.open(fileobj=io.BytesIO(blob(archive, manifest["layers"][-1]["digest"]))) as t:
            return read(t, name)


def test_the_image_config_is_the_dockerfiles() -> None:
    config, layers = contents()
    runtime = config["config"]
    assert runtime["Entrypoint"] == ["plait"]
    assert runtime["Cmd"] == ["--help"]
    assert runtime["User"] == USER == "65532:65532"
    assert runtime["WorkingDir"] == "/tmp"
    assert runtime["Env"][0].startswith("PATH=/opt/plait/bin:")
    assert {"PYTHONDONTWRITEBYTECODE=1", "PYTHONUNBUFFERED=1"} <= set(runtime["Env"])
    assert set(runtime["ExposedPorts"]) == {"8000/tcp", "8080/tcp", "9443/tcp"}
    assert image().reference.startswith(f"{IMAGE_REPOSITORY}:0.1.0-")
    assert len(layers) == len(config["rootfs"]["diff_ids"]) == 2


def test_python_below_plait_above_and_no_build_tools() -> None:
    _, (base, app) = contents()
    assert "usr/bin/python3.11" in base
    assert "opt/plait/bin/plait" in app
    assert all(name.startswith("opt") for name in app)
    everything = set(base) | set(app)
    assert not [n for n in everything if "/site-packages/pip/" in n or n.endswith("bin/pip")]
    assert not [n for n in everything if n.rsplit("/", 1)[-1] in ("gcc", "cc", "apt", "dpkg")]
    assert not [n for n in base if n.startswith("usr/share/man/")]
    passwd = base["etc/passwd"]
    assert passwd.size > 0
    assert base["tmp"].mode == 0o1777


def test_every_module_is_compiled_and_checked_by_hash_only() -> None:
    """Bytecode for each module, flagged ``unchecked-hash`` (PEP 552: flags 0b01), so a
    read-only root filesystem with mtime-0 files never recompiles at start."""
    _, (base, app) = contents()
    for layer, prefix in ((app, "opt/plait/lib/python3.11/site-packages/plait/"),
                          (base, "usr/lib/python3.11/json/")):  # fmt: skip
        sources = [n for n in layer if n.startswith(prefix) and n.endswith(".py")]
        assert sources
        for source in sources:
            folder, _, name = source.rpartition("/")
            assert f"{folder}/__pycache__/{name[:-3]}.cpython-311.pyc" in layer, source
    site = "opt/plait/lib/python3.11/site-packages"
    header = top_layer_file(f"{site}/plait/__pycache__/cli.cpython-311.pyc")[:8]
    assert int.from_bytes(header[4:8], "little") == 0b01
