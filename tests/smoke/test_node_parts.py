"""The real node's parts that need no cluster: the OCI packer and the capability check."""

from __future__ import annotations

import hashlib
import json
import os
import tarfile
from pathlib import Path

import pytest

from plait.testing import node
from plait.testing.images import (
    ImageConfig,
    Layer,
    normalize_name,
    pack_directory,
    write_oci_archive,
)


@pytest.mark.parametrize(
    ("name", "full"),
    [
        ("busybox", "docker.io/library/busybox:latest"),
        ("busybox:1.35", "docker.io/library/busybox:1.35"),
        ("me/tool:2", "docker.io/me/tool:2"),
        ("registry.k8s.io/pause:3.10", "registry.k8s.io/pause:3.10"),
        ("localhost:5000/x", "localhost:5000/x:latest"),
        ("localhost/x:1", "localhost/x:1"),
    ],
)
def test_names_are_normalized_as_containerd_stores_them(name: str, full: str) -> None:
    assert normalize_name(name) == full


def read_archive(path: Path) -> dict[str, bytes]:
    with tarfile.open(path) as tar:
        return {
            m.name: tar.extractfile(m).read()  # type: ignore[union-attr]
            for m in tar.getmembers()
            if m.isfile()
        }


def test_archive_is_a_valid_one_layer_oci_layout(tmp_path: Path) -> None:
    root = tmp_path / "rootfs"
    (root / "bin").mkdir(parents=True)
    (root / "bin" / "tool").write_bytes(b"#!/bin/sh\necho hi\n")
    (root / "bin" / "tool").chmod(0o755)
    (root / "bin" / "alias").symlink_to("tool")
    out, digest = write_oci_archive(
        pack_directory(root),
        ImageConfig(entrypoint=("/bin/tool",), architecture="amd64"),
        ["me/tool:1", "me/tool:latest"],
        tmp_path / "tool.tar",
    )
    files = read_archive(out)
    assert json.loads(files["oci-layout"]) == {"imageLayoutVersion": "1.0.0"}
    for name, content in files.items():  # every blob is named by its content's digest
        if name.startswith("blobs/sha256/"):
            assert hashlib.sha256(content).hexdigest() == name.rsplit("/", 1)[1]
    index = json.loads(files["index.json"])
    assert [m["annotations"]["io.containerd.image.name"] for m in index["manifests"]] == [
        "docker.io/me/tool:1",
        "docker.io/me/tool:latest",
    ]
    assert {m["digest"] for m in index["manifests"]} == {digest}
    manifest = json.loads(files[f"blobs/sha256/{digest.removeprefix('sha256:')}"])
    config = json.loads(files[f"blobs/sha256/{manifest['config']['digest'][7:]}"])
    (layer_ref,) = manifest["layers"]
    assert config["rootfs"]["diff_ids"] == [layer_ref["digest"]]  # uncompressed layer
    assert config["config"]["Entrypoint"] == ["/bin/tool"]
    layer = files[f"blobs/sha256/{layer_ref['digest'][7:]}"]
    layer_path = tmp_path / "layer.tar"
    layer_path.write_bytes(layer)
    with tarfile.open(layer_path) as tar:
        members = {m.name: m for m in tar.getmembers()}
    assert members["bin/tool"].mode == 0o755
    assert members["bin/alias"].issym()
    assert members["bin/alias"].linkname == "tool"
    assert {(m.uid, m.gid, m.mtime) for m in members.values()} == {(0, 0, 0)}


def test_same_input_gives_the_same_digest(tmp_path: Path) -> None:
    def build(path: Path) -> str:
        layer = Layer()
        layer.add_file("etc/motd", b"hello\n")
        return write_oci_archive(layer, ImageConfig(), ["x:1"], path)[1]

    first = build(tmp_path / "a.tar")
    assert build(tmp_path / "b.tar") == first
    assert (tmp_path / "a.tar").read_bytes() == (tmp_path / "b.tar").read_bytes()


def test_a_user_without_root_is_told_why_there_is_no_real_node(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(node.os, "geteuid", lambda: 1000)
    reason = node.unavailable_reason(tmp_path)
    assert reason is not None
    assert reason.startswith("the real node needs root")
    assert reason.endswith("running as uid 1000")


def test_a_binary_folder_without_the_kubelet_is_named(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("the root check comes first")
    assert node.unavailable_reason(tmp_path) == (
        f"kubelet is not in {tmp_path}: rebuild it with hack/build-k8s.sh"
    )
