"""Passwords: argon2id PHC hashes (argon2-cffi) and the rules a new password must meet.

Hashing and verifying cost tens of milliseconds of CPU by design, so the async callers run
them in a thread. An unknown user is verified against a dummy hash, so the answer takes as
long as for a known one and does not tell which usernames exist.
"""

from __future__ import annotations

import asyncio
import functools

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from plait.errors import ValidationError

__all__ = ["MAX_LENGTH", "MIN_LENGTH", "check_policy", "hash_password", "verify_password"]

MIN_LENGTH = 12
MAX_LENGTH = 1024
#: RFC 9106's second recommended option: argon2id, 64 MiB, 3 passes, 4 lanes.
_HASHER = PasswordHasher(time_cost=3, memory_cost=65536, parallelism=4, type=Type.ID)


def check_policy(password: str, username: str = "") -> None:
    """Refuse an empty, short, overlong or trivially guessable password, saying why."""
    if not password:
        raise ValidationError("the password is empty")
    if len(password) < MIN_LENGTH:
        raise ValidationError(
            f"the password has {len(password)} characters; at least {MIN_LENGTH} are required"
        )
    if len(password) > MAX_LENGTH:
        raise ValidationError(f"the password is longer than {MAX_LENGTH} characters")
    if len(set(password)) < 4:
        raise ValidationError("the password uses fewer than 4 different characters")
    if username and username.lower() in password.lower():
        raise ValidationError("the password contains the username")


def hash_password(password: str) -> str:
    """The argon2id PHC string of ``password`` (a fresh random salt each time)."""
    return _HASHER.hash(password)


@functools.cache
def _dummy_hash() -> str:
    return _HASHER.hash("plait dummy password, never assigned")


def verify_password(password: str, stored: str | None) -> bool:
    """True when ``password`` matches ``stored``; a missing hash costs the same time."""
    try:
        return _HASHER.verify(stored or _dummy_hash(), password) and stored is not None
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


async def hash_password_async(password: str) -> str:
    return await asyncio.to_thread(hash_password, password)


async def verify_password_async(password: str, stored: str | None) -> bool:
    return await asyncio.to_thread(verify_password, password, stored)
