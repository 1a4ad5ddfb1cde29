"""API tokens and session secrets: their format, and the keyed hash that is all we store.

A token reads ``plait_pat_<30 random base62>_<6 base62 of CRC32>`` (``pat`` for personal
access tokens, ``svc`` for service tokens, ``ses`` for session cookies). The prefix lets
secret scanners and people recognise a leaked token; the checksum lets Plait refuse a
mistyped or truncated one without a database round trip. Only ``HMAC-SHA-256(key, token)``
is stored, so a copy of the database (a backup, a dump) is of no use without the key.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from plait.errors import ConfigurationError

__all__ = [
    "KEY_ENV",
    "KEY_FILE_ENV",
    "TOKEN_PATTERN",
    "MalformedToken",
    "SecretKey",
    "TokenKind",
    "looks_like_plait_token",
    "new_secret",
    "parse",
]

KEY_ENV = "PLAIT_AUTH_TOKEN_KEY"
KEY_FILE_ENV = "PLAIT_AUTH_TOKEN_KEY_FILE"
#: Shortest accepted server key, in bytes (the HMAC key of every stored token).
MIN_KEY_BYTES = 32
_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_RANDOM_CHARS = 30  # 30 base62 characters: 178 bits
_CHECK_CHARS = 6  # 62**6 > 2**32
TokenKind = Literal["pat", "svc", "ses"]
TOKEN_PATTERN = re.compile(r"^plait_(pat|svc|ses)_([0-9A-Za-z]{30})_([0-9A-Za-z]{6})$")


class MalformedToken(ValueError):
    """The presented string is not a Plait token, or its checksum does not match."""


def _base62(number: int, width: int) -> str:
    digits = []
    for _ in range(width):
        number, digit = divmod(number, 62)
        digits.append(_ALPHABET[digit])
    return "".join(reversed(digits))


def _checksum(kind: str, body: str) -> str:
    return _base62(zlib.crc32(f"plait_{kind}_{body}".encode()), _CHECK_CHARS)


def new_secret(kind: TokenKind) -> str:
    """A fresh token of ``kind`` (178 random bits, prefix and checksum)."""
    body = "".join(secrets.choice(_ALPHABET) for _ in range(_RANDOM_CHARS))
    return f"plait_{kind}_{body}_{_checksum(kind, body)}"


def looks_like_plait_token(presented: str) -> bool:
    """True for anything starting like a Plait token (it may still be malformed)."""
    return presented.startswith(("plait_pat_", "plait_svc_", "plait_ses_"))


def parse(presented: str) -> TokenKind:
    """The kind of a well-formed token; :class:`MalformedToken` saying what is wrong."""
    match = TOKEN_PATTERN.match(presented)
    if match is None:
        raise MalformedToken(
            "a Plait token is plait_<pat|svc|ses>_<30 letters or digits>_<6-character "
            "checksum>; this one is not shaped like that (truncated or altered?)"
        )
    kind, body, check = match.groups()
    if not hmac.compare_digest(check, _checksum(kind, body)):
        raise MalformedToken("the token's checksum does not match (mistyped or altered)")
    return kind  # type: ignore[return-value]


def display_prefix(token: str) -> str:
    """What lists show of a token: its kind and first four random characters."""
    return token[: len("plait_pat_") + 4]


@dataclass(frozen=True, slots=True, repr=False)
class SecretKey:
    """The server key under which tokens and sessions are hashed (never printed)."""

    key: bytes

    def __post_init__(self) -> None:
        if len(self.key) < MIN_KEY_BYTES:
            raise ConfigurationError(
                f"the token key ({KEY_FILE_ENV} or {KEY_ENV}) must be at least "
                f"{MIN_KEY_BYTES} bytes; generate one with `openssl rand -base64 48`"
            )

    def __repr__(self) -> str:
        return "SecretKey(<hidden>)"

    def digest(self, token: str) -> bytes:
        """HMAC-SHA-256 of ``token``: the only form in which it is stored."""
        return hmac.new(self.key, token.encode(), hashlib.sha256).digest()

    @classmethod
    def from_environment(cls, environ: dict[str, str] | None = None) -> SecretKey | None:
        """The key from ``PLAIT_AUTH_TOKEN_KEY_FILE`` (a mounted Secret) or
        ``PLAIT_AUTH_TOKEN_KEY``; None when neither is set."""
        env = dict(os.environ) if environ is None else environ
        path = env.get(KEY_FILE_ENV, "")
        if path:
            try:
                return cls(Path(path).read_bytes().strip())
            except OSError as exc:
                raise ConfigurationError(
                    f"cannot read the token key file {path} ({KEY_FILE_ENV}): {exc.strerror or exc}"
                ) from None
        value = env.get(KEY_ENV, "")
        return cls(value.encode()) if value else None
