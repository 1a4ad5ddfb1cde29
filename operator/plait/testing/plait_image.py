"""Plait's own image, built from the ``Dockerfile``'s intent without a container engine.

The ``Dockerfile`` stays the reference for real registries; this builds the same image for
the local cluster's real node, where there is no Docker:

1. **Base layer**: Debian's Python 3.11 and the libraries it links (the packages in
   :data:`BASE_PACKAGES`, fetched with ``apt-get download`` and unpacked with ``dpkg -x``,
   like the real node's), without documentation, the standard library compiled to
   bytecode, ``/etc/passwd`` naming the non-root user 65532, and ``/tmp``.
2. **Plait layer**: ``/opt/plait``, a virtualenv made by that Python (in a ``chroot`` of the
   base) holding Plait's wheel and its dependencies, at the versions of the project's own
   virtualenv (the versions the suite tests), installed by pip run from its wheel, which
   stays out of the image; compiled to bytecode.

The two layers are packed as one OCI archive (:func:`plait.testing.images.write_oci_archive`)
with the Dockerfile's configuration: entrypoint ``plait``, user ``65532:65532``, workdir
``/tmp``, ``PYTHONDONTWRITEBYTECODE``/``PYTHONUNBUFFERED``, ports 8000, 8080 and 9443. The
bytecode is checked by nothing but its hash (``unchecked-hash``): the layers store every
file with mtime 0, so timestamp-checked bytecode would always look stale, and the root
filesystem is read-only at run time.

The archive is cached in ``<cache root>/images/plait-<key>.tar``, ``key`` covering the
packages, this module, ``pyproject.toml``, ``README.md``, every file under ``operator/`` and
the pinned versions, and named ``localhost/plait:<version>-<key>``: a changed source gives
a new tag, so a ``helm upgrade`` to it rolls the pods. ``python -m plait.testing.plait_image``
(``make image``) builds it and prints the archive and the name. Building needs root (the
``chroot``) and Debian's ``apt-get`` and ``dpkg``.
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from plait.errors import ClusterError
from plait.testing.images import ImageConfig, image_cache_dir, pack_directory, write_oci_archive

__all__ = ["BASE_PACKAGES", "IMAGE_REPOSITORY", "PlaitImage", "build_plait_image"]

IMAGE_REPOSITORY = "localhost/plait"
#: Debian 12's Python 3.11 and what it links; tzdata for zoneinfo (cron time zones),
#: netbase for /etc/services and /etc/protocols.
BASE_PACKAGES = (
    "python3.11-minimal", "libpython3.11-minimal", "libpython3.11-stdlib",
    "libc6", "libgcc-s1", "gcc-12-base", "libssl3", "zlib1g", "libexpat1", "libffi8",
    "libbz2-1.0", "liblzma5", "libcrypt1", "libsqlite3-0", "libuuid1", "libncursesw6",
    "libtinfo6", "libreadline8", "readline-common", "libdb5.3", "libnsl2", "libtirpc3",
    "libtirpc-common", "libgssapi-krb5-2", "libkrb5-3", "libk5crypto3", "libkrb5support0",
    "libcom-err2", "libkeyutils1", "media-types", "netbase", "tzdata",
)  # fmt: skip
#: The pip that installs the wheels (the Dockerfile's pin); it is not part of the image.
PIP_VERSION = "25.2"
USER = "65532:65532"
_UNUSED_SECONDS = 3600
_REPO_ROOT = Path(__file__).resolve().parents[3]
_PYTHON = "/usr/bin/python3.11"
_VENV = "/opt/plait"
# Trimmed from the base: documentation (the copyright files stay), manuals, translations.
_TRIM = ("usr/share/man", "usr/share/info", "usr/share/lintian", "usr/share/locale")


@dataclass(frozen=True)
class PlaitImage:
    """A built image: its archive, the name it is imported under, what it took."""

    archive: Path
    reference: str
    digest: str
    size_bytes: int
    build_seconds: float
    cached: bool

    @property
    def repository(self) -> str:
        return self.reference.rsplit(":", 1)[0]

    @property
    def tag(self) -> str:
        return self.reference.rsplit(":", 1)[1]


def _say(message: str, progress: bool) -> None:
    if progress:
        print(f"[plait-image] {message}", file=sys.stderr, flush=True)


def _run(*cmd: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> str:
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env, cwd=cwd)
    if proc.returncode != 0:
        raise ClusterError(
            f"{' '.join(cmd[:6])} ... failed (exit {proc.returncode}): "
            f"{(proc.stderr or proc.stdout).strip()[-3000:]}"
        )
    return proc.stdout


def _digest(*parts: bytes) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(hashlib.sha256(part).digest())
    return h.hexdigest()


def _codename() -> str:
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("VERSION_CODENAME="):
                return line.split("=", 1)[1].strip('"')
    except OSError:
        pass
    return "unknown"


def _base_key() -> str:
    return _digest(_codename().encode(), "\n".join(BASE_PACKAGES).encode(), b"base-1")


def _pinned_versions() -> str:
    """What the project's virtualenv holds (Plait itself excluded): the constraints."""
    return _run(sys.executable, "-m", "pip", "freeze", "--exclude-editable")


def _source_files() -> list[Path]:
    files = [_REPO_ROOT / "pyproject.toml", _REPO_ROOT / "README.md", Path(__file__).resolve()]
    for dirpath, dirnames, filenames in os.walk(_REPO_ROOT / "operator"):
        dirnames[:] = sorted(
            d for d in dirnames if d != "__pycache__" and not d.endswith(".egg-info")
        )
        files += [Path(dirpath) / f for f in sorted(filenames) if not f.endswith(".pyc")]
    return files


def image_key(pinned: str) -> str:
    """The content key: the base packages, the sources, this module, the pinned versions."""
    parts = [_base_key().encode(), pinned.encode()]
    for path in _source_files():
        parts += [path.relative_to(_REPO_ROOT).as_posix().encode(), path.read_bytes()]
    return _digest(*parts)


def _version() -> str:
    for line in (_REPO_ROOT / "pyproject.toml").read_text().splitlines():
        if line.startswith("version = "):
            return line.split('"')[1]
    raise ClusterError("no version in pyproject.toml")


def _chroot(root: Path, *cmd: str) -> str:
    env = {"PATH": "/usr/bin:/bin", "HOME": "/tmp", "LANG": "C.UTF-8"}
    chroot = shutil.which("chroot") or "/usr/sbin/chroot"
    return _run(chroot, str(root), *cmd, env=env)


def build_base(cache: Path, *, progress: bool = True) -> Path:
    """The base root filesystem (cached by the package list): Python and its libraries.

    Returns ``<cache>/base-<key>``, holding ``root/`` and ``versions.txt`` (the packages'
    versions)."""
    base = cache / f"base-{_base_key()[:16]}"
    if (base / "versions.txt").exists():
        return base
    for old in cache.glob("base-*"):  # an earlier package list's
        shutil.rmtree(old, ignore_errors=True)
    work = Path(tempfile.mkdtemp(prefix="plait-image-base-", dir=cache))
    try:
        debs = work / "debs"
        debs.mkdir()
        _say(f"downloading {len(BASE_PACKAGES)} Debian packages", progress)
        try:
            _run("apt-get", "download", "-qq", *BASE_PACKAGES, cwd=debs)
        except ClusterError:
            _run("apt-get", "update", "-qq")  # a fresh machine's lists may be missing
            _run("apt-get", "download", "-qq", *BASE_PACKAGES, cwd=debs)
        root = work / "root"
        versions = []
        for deb in sorted(debs.glob("*.deb")):
            _run("dpkg-deb", "-x", str(deb), str(root))
            versions.append(
                _run("dpkg-deb", "-W", "--showformat=${Package} ${Version}\n", str(deb))
            )
        for rel in _TRIM:
            shutil.rmtree(root / rel, ignore_errors=True)
        docs = root / "usr" / "share" / "doc"
        for path in sorted(docs.rglob("*"), reverse=True) if docs.is_dir() else []:
            if path.is_file() and path.name != "copyright":
                path.unlink()
        for folder in ("etc", "tmp", "home/nonroot", "usr/local/bin"):
            (root / folder).mkdir(parents=True, exist_ok=True)
        os.chmod(root / "tmp", 0o1777)
        os.chown(root / "home" / "nonroot", 65532, 65532)
        (root / "etc" / "passwd").write_text(
            "root:x:0:0:root:/root:/usr/sbin/nologin\n"
            "nonroot:x:65532:65532:nonroot:/home/nonroot:/usr/sbin/nologin\n"
        )
        (root / "etc" / "group").write_text("root:x:0:\nnonroot:x:65532:\n")
        # What Debian's maintainer scripts would have linked (dpkg -x runs none of them).
        (root / "etc" / "localtime").symlink_to("/usr/share/zoneinfo/Etc/UTC")
        _say("compiling the standard library to bytecode", progress)
        _chroot(root, _PYTHON, "-m", "compileall", "-q",
                "--invalidation-mode", "unchecked-hash", "/usr/lib/python3.11")  # fmt: skip
        (work / "versions.txt").write_text("".join(sorted(versions)))
        shutil.rmtree(debs)
        work.rename(base)
        return base
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _wheels(into: Path, pinned: str, progress: bool) -> None:
    """Plait's wheel, its dependencies' wheels at the pinned versions, and pip's."""
    constraints = into / "constraints.txt"
    constraints.write_text(pinned)
    _say("building Plait's wheel and collecting its dependencies", progress)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    _run(*pip, "wheel", "--wheel-dir", str(into), "--constraint", str(constraints),
         str(_REPO_ROOT))  # fmt: skip
    _run(*pip, "download", "--no-deps", "--dest", str(into), f"pip=={PIP_VERSION}")
    constraints.unlink()


def build_plait_image(
    out_dir: Path | None = None, *, progress: bool = True, force: bool = False
) -> PlaitImage:
    """Build (or find in the cache) Plait's image archive; see the module docstring.

    One build at a time on the machine (a lock in the cache): a second caller waits, then
    finds the archive cached when its sources are the same."""
    if os.geteuid() != 0:
        raise ClusterError("building Plait's image needs root (it runs pip in a chroot)")
    out_dir = out_dir or image_cache_dir()
    cache = out_dir.parent / "plait-image"
    cache.mkdir(parents=True, exist_ok=True)
    with (cache / "build.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return _build(out_dir, cache, progress=progress, force=force)


def _build(out_dir: Path, cache: Path, *, progress: bool, force: bool) -> PlaitImage:
    started = time.monotonic()
    pinned = _pinned_versions()
    key = image_key(pinned)[:16]
    reference = f"{IMAGE_REPOSITORY}:{_version()}-{key}"
    archive = out_dir / f"plait-{key}.tar"
    meta = archive.with_suffix(".json")
    if archive.exists() and meta.exists() and not force:
        os.utime(archive)  # in use: an hour before another build may prune it
        data = json.loads(meta.read_text())
        return PlaitImage(
            archive, reference, data["digest"], archive.stat().st_size,
            time.monotonic() - started, cached=True,
        )  # fmt: skip
    base = build_base(cache, progress=progress)
    work = Path(tempfile.mkdtemp(prefix="plait-image-", dir=cache))
    try:
        root = work / "root"
        _say("copying the base into a build root", progress)
        _run("cp", "-a", str(base / "root"), str(root))
        wheels = root / "wheels"
        wheels.mkdir()
        _wheels(wheels, pinned, progress)
        _say("installing Plait into /opt/plait (pip in a chroot of the base)", progress)
        _chroot(root, _PYTHON, "-m", "venv", "--without-pip", _VENV)
        pip_wheel = next(wheels.glob("pip-*.whl")).name
        _chroot(root, f"{_VENV}/bin/python", f"/wheels/{pip_wheel}/pip", "install", "-q",
                "--no-index", "--find-links", "/wheels", "--no-compile", "--no-cache-dir",
                "--disable-pip-version-check", "plait")  # fmt: skip
        _chroot(root, f"{_VENV}/bin/python", "-m", "compileall", "-q",
                "--invalidation-mode", "unchecked-hash", _VENV)  # fmt: skip
        _chroot(root, f"{_VENV}/bin/plait", "--help")  # the entrypoint runs
        app = work / "app"
        (app / "opt").mkdir(parents=True)
        (root / "opt" / "plait").rename(app / "opt" / "plait")
        _say("packing the layers", progress)
        base_layer = pack_directory(base / "root")
        config = ImageConfig(
            entrypoint=("plait",),
            cmd=("--help",),
            env=(
                f"PATH={_VENV}/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                "PYTHONDONTWRITEBYTECODE=1",
                "PYTHONUNBUFFERED=1",
            ),
            workdir="/tmp",
            user=USER,
            labels={
                "org.opencontainers.image.title": "plait",
                "org.opencontainers.image.description": (
                    "Kubernetes-native event-driven workflow orchestrator"
                ),
                "org.opencontainers.image.source": "https://github.com/plait-dev/plait",
                "org.opencontainers.image.licenses": "Apache-2.0",
                "org.opencontainers.image.version": _version(),
            },
            exposed_ports=("8000/tcp", "8080/tcp", "9443/tcp"),
        )
        _, digest = write_oci_archive(
            [base_layer, pack_directory(app)], config, [reference], archive
        )
        meta.write_text(json.dumps({"reference": reference, "digest": digest}))
        _prune(out_dir, keep=archive)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    seconds = time.monotonic() - started
    size = archive.stat().st_size
    _say(f"{reference}: {size / 2**20:.0f} MiB in {seconds:.0f}s ({archive})", progress)
    return PlaitImage(archive, reference, digest, size, seconds, cached=False)


def _prune(out_dir: Path, *, keep: Path) -> None:
    """Remove the archives of earlier sources (about 320 MiB each) unused for an hour: a
    session that was handed one (built or found, which touches it) imports it well within
    that, so concurrent sessions on other sources keep theirs."""
    for old in out_dir.iterdir():
        stem, _, suffix = old.name.partition(".")
        key = stem.removeprefix("plait-")
        if (
            old.stem != keep.stem
            and suffix in ("tar", "json")
            and len(key) == 16
            and all(c in "0123456789abcdef" for c in key)
            and time.time() - old.stat().st_mtime > _UNUSED_SECONDS
        ):
            old.unlink(missing_ok=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m plait.testing.plait_image",
        description="Build Plait's image as an OCI archive without a container engine.",
    )
    parser.add_argument("--output-dir", type=Path, default=None, help="default: the cache")
    parser.add_argument("--force", action="store_true", help="rebuild even when cached")
    args = parser.parse_args(argv)
    image = build_plait_image(args.output_dir, force=args.force)
    print(f"{image.archive} {image.reference}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
