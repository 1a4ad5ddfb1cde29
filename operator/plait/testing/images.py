"""Container images without a registry or a container engine: one-layer OCI archives.

The local cluster's real node has no registry to pull from, so the project packs the
images its pods need itself and imports them into the node's containerd:

- ``busybox``: Debian's ``busybox-static`` binary with a link per applet, named
  ``docker.io/library/busybox:1.35`` (the version Debian ships) and ``...:latest``;
- ``pause``: the static Go program in ``hack/pause`` that holds every pod's namespaces,
  named ``registry.k8s.io/pause:3.10`` (the sandbox image containerd is configured with).

:func:`pack_directory` turns any folder into such an archive (a user's own image);
``python -m plait.testing.images pack ROOTFS --name NAME -o FILE.tar`` does it from the
shell. An archive is an OCI image layout (``oci-layout``, ``index.json``, ``blobs/``) in a
tar; each name is an ``io.containerd.image.name`` annotation, which ``ctr images import``
turns into an image of that name. Archives are byte-for-byte reproducible (sorted entries,
owner root, mtime 0), so the same inputs give the same image digest.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import platform
import stat
import subprocess
import sys
import tarfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "ARTIFACTS_IMAGE",
    "BUSYBOX_IMAGES",
    "PAUSE_IMAGE",
    "ImageConfig",
    "Layer",
    "build_artifacts_image",
    "build_node_images",
    "image_cache_dir",
    "normalize_name",
    "pack_directory",
    "write_oci_archive",
]

PAUSE_IMAGE = "registry.k8s.io/pause:3.10"
BUSYBOX_IMAGES = ("docker.io/library/busybox:1.35", "docker.io/library/busybox:latest")
#: plait-artifacts (hack/plait-artifacts) as the local cluster knows it: the operator of a
#: test or demo is given it as PLAIT_ARTIFACTS_IMAGE.
ARTIFACTS_IMAGE = "localhost/plait/plait-artifacts:dev"

_LAYER_TYPE = "application/vnd.oci.image.layer.v1.tar"
_CONFIG_TYPE = "application/vnd.oci.image.config.v1+json"
_MANIFEST_TYPE = "application/vnd.oci.image.manifest.v1+json"
_INDEX_TYPE = "application/vnd.oci.image.index.v1+json"
_GOARCH = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "ppc64le": "ppc64le"}


def normalize_name(name: str) -> str:
    """The full reference containerd and the kubelet use: ``busybox`` is
    ``docker.io/library/busybox:latest``."""
    last = name.rsplit("/", 1)[-1]
    if "@" not in name and ":" not in last:
        name += ":latest"
    first = name.split("/", 1)[0]
    if "/" not in name or ("." not in first and ":" not in first and first != "localhost"):
        name = f"docker.io/{name}" if "/" in name else f"docker.io/library/{name}"
    return name


@dataclass(frozen=True)
class ImageConfig:
    """What the runtime reads from the image config: the command and its environment."""

    entrypoint: Sequence[str] = ()
    cmd: Sequence[str] = ()
    env: Sequence[str] = ("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",)
    workdir: str = "/"
    architecture: str = field(default_factory=lambda: _GOARCH.get(platform.machine(), "amd64"))
    #: ``uid:gid`` the container runs as; empty means the runtime's default (root).
    user: str = ""
    labels: Mapping[str, str] = field(default_factory=dict)
    #: Ports the image documents (``8000/tcp``); informational, as in a Dockerfile's EXPOSE.
    exposed_ports: Sequence[str] = ()


class Layer:
    """A reproducible layer tar built in memory: every entry owned by root, mtime 0."""

    def __init__(self) -> None:
        self._entries: dict[str, tuple[tarfile.TarInfo, bytes | None]] = {}

    def add_dir(self, path: str, mode: int = 0o755) -> None:
        self._put(path, tarfile.DIRTYPE, mode)

    def add_file(self, path: str, data: bytes, mode: int = 0o644) -> None:
        self._put(path, tarfile.REGTYPE, mode, data=data)

    def add_symlink(self, path: str, target: str) -> None:
        self._put(path, tarfile.SYMTYPE, 0o777, linkname=target)

    def _put(
        self, path: str, kind: bytes, mode: int, *, data: bytes | None = None, linkname: str = ""
    ) -> None:
        name = path.strip("/")
        parent = os.path.dirname(name)
        if parent and parent not in self._entries:
            self.add_dir(parent)
        info = tarfile.TarInfo(name)
        info.type = kind
        info.mode = mode
        info.uid = info.gid = 0
        info.uname = info.gname = "root"
        info.mtime = 0
        info.linkname = linkname
        info.size = len(data) if data is not None else 0
        self._entries[name] = (info, data)

    def tar(self) -> bytes:
        """The layer as an uncompressed tar, entries sorted (parents before children)."""
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
            for name in sorted(self._entries):
                info, data = self._entries[name]
                tar.addfile(info, io.BytesIO(data) if data is not None else None)
        return buffer.getvalue()


def pack_directory(root: Path) -> Layer:
    """A layer holding the tree under ``root`` (files, folders, symlinks; modes kept)."""
    layer = Layer()
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(dirnames + filenames):
            path = Path(dirpath) / name
            rel = path.relative_to(root).as_posix()
            st = path.lstat()
            if stat.S_ISLNK(st.st_mode):
                layer.add_symlink(rel, os.readlink(path))
            elif stat.S_ISDIR(st.st_mode):
                layer.add_dir(rel, stat.S_IMODE(st.st_mode))
            elif stat.S_ISREG(st.st_mode):
                layer.add_file(rel, path.read_bytes(), stat.S_IMODE(st.st_mode))
    return layer


def _blob(content: bytes) -> tuple[str, bytes]:
    return f"sha256:{hashlib.sha256(content).hexdigest()}", content


def write_oci_archive(
    layer: Layer | Sequence[Layer], config: ImageConfig, names: Iterable[str], out: Path
) -> tuple[Path, str]:
    """Write the OCI image layout tar of an image; returns it and the manifest digest.

    ``layer`` is one layer or several, lowest first (a base that rarely changes below the
    part that does, so the runtime stores the base once). Each name (normalized, see
    :func:`normalize_name`) becomes one ``index.json`` entry with the
    ``io.containerd.image.name`` annotation, all pointing at the same manifest.
    """
    blobs = [_blob(one.tar()) for one in ([layer] if isinstance(layer, Layer) else layer)]
    if not blobs:
        raise ValueError("an image needs at least one layer")
    runtime: dict[str, object] = {
        "Env": list(config.env),
        "Entrypoint": list(config.entrypoint) or None,
        "Cmd": list(config.cmd) or None,
        "WorkingDir": config.workdir,
    }
    if config.user:
        runtime["User"] = config.user
    if config.labels:
        runtime["Labels"] = dict(config.labels)
    if config.exposed_ports:
        runtime["ExposedPorts"] = {port: {} for port in config.exposed_ports}
    image_config = {
        "architecture": config.architecture,
        "os": "linux",
        "config": runtime,
        "rootfs": {"type": "layers", "diff_ids": [digest for digest, _ in blobs]},
        "history": [{"created_by": "plait.testing.images"} for _ in blobs],
    }
    config_digest, config_json = _blob(_canonical(image_config))
    manifest = {
        "schemaVersion": 2,
        "mediaType": _MANIFEST_TYPE,
        "config": {"mediaType": _CONFIG_TYPE, "digest": config_digest, "size": len(config_json)},
        "layers": [
            {"mediaType": _LAYER_TYPE, "digest": digest, "size": len(content)}
            for digest, content in blobs
        ],
    }
    manifest_digest, manifest_json = _blob(_canonical(manifest))
    refs = [normalize_name(n) for n in names]
    if not refs:
        raise ValueError("an image needs at least one name")
    index = {
        "schemaVersion": 2,
        "mediaType": _INDEX_TYPE,
        "manifests": [
            {
                "mediaType": _MANIFEST_TYPE,
                "digest": manifest_digest,
                "size": len(manifest_json),
                "platform": {"architecture": config.architecture, "os": "linux"},
                "annotations": {
                    "io.containerd.image.name": ref,
                    "org.opencontainers.image.ref.name": ref.rsplit(":", 1)[-1],
                },
            }
            for ref in refs
        ],
    }
    files = {
        "oci-layout": _canonical({"imageLayoutVersion": "1.0.0"}),
        "index.json": _canonical(index),
        **{
            f"blobs/sha256/{digest.split(':', 1)[1]}": content
            for digest, content in (
                *blobs,
                (config_digest, config_json),
                (manifest_digest, manifest_json),
            )
        },
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as archive:
        for directory in ("blobs", "blobs/sha256"):
            info = tarfile.TarInfo(directory)
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            archive.addfile(info)
        for name, content in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(content), 0o644
            archive.addfile(info, io.BytesIO(content))
    tmp.replace(out)
    return out, manifest_digest


def _canonical(document: object) -> bytes:
    return json.dumps(document, sort_keys=True, separators=(",", ":")).encode()


def busybox_layer(busybox: Path) -> Layer:
    """Debian's static busybox with one link per applet, ``/etc/passwd``, ``/tmp``."""
    applets = subprocess.run(
        [str(busybox), "--list-full"], capture_output=True, text=True, check=True
    ).stdout.split()
    layer = Layer()
    for directory in ("bin", "sbin", "usr/bin", "usr/sbin", "etc", "root", "var"):
        layer.add_dir(directory)
    layer.add_dir("tmp", 0o1777)
    layer.add_file("bin/busybox", busybox.read_bytes(), 0o755)
    for applet in applets:
        if applet != "bin/busybox":
            layer.add_symlink(applet, "/bin/busybox")
    layer.add_file(
        "etc/passwd", b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534::/:/bin/false\n"
    )
    layer.add_file("etc/group", b"root:x:0:\nnogroup:x:65534:\n")
    return layer


def image_cache_dir() -> Path:
    """Where the built archives are kept: ``<cache root>/images`` (``PLAIT_CACHE_DIR``)."""
    root = os.environ.get("PLAIT_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "plait"
    )
    return Path(root) / "images"


def build_node_images(node_dir: Path, pause_binary: Path, out_dir: Path) -> list[Path]:
    """The busybox and pause archives, rebuilt only when their binaries change."""
    busybox = node_dir / "root" / "bin" / "busybox"
    wanted = [
        ("busybox", busybox, BUSYBOX_IMAGES),
        ("pause", pause_binary, (PAUSE_IMAGE,)),
    ]
    archives = []
    for stem, binary, names in wanted:
        tag = hashlib.sha256(binary.read_bytes()).hexdigest()[:16]
        out = out_dir / f"{stem}-{tag}.tar"
        if not out.exists():
            if stem == "busybox":
                layer, config = busybox_layer(binary), ImageConfig(cmd=("sh",))
            else:
                layer = Layer()
                layer.add_file("pause", binary.read_bytes(), 0o755)
                config = ImageConfig(entrypoint=("/pause",), env=())
            write_oci_archive(layer, config, names, out)
        archives.append(out)
    return archives


def build_artifacts_image(binary: Path, out_dir: Path) -> Path:
    """The archive of :data:`ARTIFACTS_IMAGE`: the static ``plait-artifacts`` binary alone,
    as ``/plait-artifacts`` (rebuilt only when the binary changes)."""
    tag = hashlib.sha256(binary.read_bytes()).hexdigest()[:16]
    out = out_dir / f"plait-artifacts-{tag}.tar"
    if not out.exists():
        layer = Layer()
        layer.add_file("plait-artifacts", binary.read_bytes(), 0o755)
        config = ImageConfig(entrypoint=("/plait-artifacts",), env=())
        write_oci_archive(layer, config, (ARTIFACTS_IMAGE,), out)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m plait.testing.images",
        description="Pack a folder as a one-layer OCI image archive for 'ctr images import'.",
    )
    sub = parser.add_subparsers(dest="action", required=True)
    pack = sub.add_parser("pack", help="pack ROOTFS (a folder) as an image archive")
    pack.add_argument("rootfs", type=Path)
    pack.add_argument("--name", action="append", required=True, help="image name (repeatable)")
    pack.add_argument("--entrypoint", nargs="+", default=[])
    pack.add_argument("--cmd", nargs="+", default=[])
    pack.add_argument("-o", "--output", type=Path, required=True)
    args = parser.parse_args(argv)
    path, digest = write_oci_archive(
        pack_directory(args.rootfs),
        ImageConfig(entrypoint=args.entrypoint, cmd=args.cmd),
        args.name,
        args.output,
    )
    print(f"{path} {digest} {' '.join(normalize_name(n) for n in args.name)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
