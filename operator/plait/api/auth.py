"""Bearer tokens for ``/v1``: from a file (a mounted Secret) and/or one environment variable.

The file holds one token per line and is re-read whenever it changes (a Kubernetes Secret
volume swaps a symlink on update), so tokens rotate without a restart. Presented tokens are
compared with :func:`hmac.compare_digest` against every configured token, so the time taken
says nothing about how much of a token matched, nor which one. Tokens are never logged.
"""

from __future__ import annotations

import hmac
import logging
import os
from collections.abc import Iterable, Mapping
from pathlib import Path

from plait.errors import ConfigurationError

__all__ = ["TOKEN_ENV", "TOKEN_FILE_ENV", "TokenStore"]

logger = logging.getLogger(__name__)
TOKEN_ENV = "PLAIT_API_TOKEN"
TOKEN_FILE_ENV = "PLAIT_API_TOKEN_FILE"


def _parse(text: str) -> list[bytes]:
    return [line.strip().encode() for line in text.splitlines() if line.strip()]


class TokenStore:
    """The set of accepted tokens: fixed ones plus the lines of ``file`` (reloaded on change)."""

    def __init__(self, tokens: Iterable[str] = (), file: Path | None = None) -> None:
        self._fixed = [t.strip().encode() for t in tokens if t.strip()]
        self._file = file
        self._file_tokens: list[bytes] = []
        self._file_stamp: tuple[int, int, int] | None = None
        self._warned = False
        if file is not None:
            try:
                self._file_tokens = _parse(file.read_text())
                st = file.stat()
                self._file_stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
            except OSError as exc:
                raise ConfigurationError(
                    f"cannot read the API token file {file} ({TOKEN_FILE_ENV}): "
                    f"{exc.strerror or exc}"
                ) from None

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> TokenStore:
        env = os.environ if environ is None else environ
        token = env.get(TOKEN_ENV, "")
        file = env.get(TOKEN_FILE_ENV, "")
        return cls([token] if token else [], Path(file) if file else None)

    @property
    def configured(self) -> bool:
        """True when at least one token is accepted (else every request would be refused)."""
        self._refresh()
        return bool(self._fixed or self._file_tokens)

    def _refresh(self) -> None:
        if self._file is None:
            return
        try:
            st = self._file.stat()
            stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
            if stamp != self._file_stamp:
                self._file_tokens = _parse(self._file.read_text())
                self._file_stamp = stamp
                logger.info("API tokens reloaded from %s (%d)", self._file, len(self._file_tokens))
            self._warned = False
        except OSError as exc:
            # Keep the last tokens read: a Secret volume briefly lacks the file mid-update.
            if not self._warned:
                logger.warning("cannot re-read the API token file %s: %s", self._file, exc)
                self._warned = True

    def check(self, presented: str) -> bool:
        """Constant-time membership test of ``presented`` in the configured tokens."""
        self._refresh()
        candidate = presented.encode()
        matched = False
        for token in (*self._fixed, *self._file_tokens):
            matched |= hmac.compare_digest(token, candidate)
        return matched
