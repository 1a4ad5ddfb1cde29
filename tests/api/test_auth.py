"""Bearer tokens: file reloads on change (rotation without restart), environment token."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from plait.api.auth import TokenStore
from plait.errors import ConfigurationError


def test_token_file_is_reread_when_it_changes(tmp_path: Path) -> None:
    secret = tmp_path / "token"
    secret.write_text("old-token\n")
    store = TokenStore.from_environment({"PLAIT_API_TOKEN_FILE": str(secret)})
    assert store.configured
    assert store.check("old-token")
    assert not store.check("new-token")
    # A Secret volume swaps a symlink; writing a new file and renaming it over does the same.
    staged = tmp_path / "token.new"
    staged.write_text("new-token\nsecond-token\n\n")
    os.replace(staged, secret)
    assert store.check("new-token")
    assert store.check("second-token")
    assert not store.check("old-token")
    # While the file is briefly missing the last tokens stay in force.
    secret.unlink()
    assert store.check("new-token")


def test_environment_token_and_prefixes_do_not_match() -> None:
    store = TokenStore.from_environment({"PLAIT_API_TOKEN": "abc123"})
    assert store.check("abc123")
    for wrong in ("abc12", "abc1234", "", "ABC123"):
        assert not store.check(wrong)
    assert not TokenStore.from_environment({}).configured


def test_unreadable_token_file_is_a_configuration_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="cannot read the API token file"):
        TokenStore.from_environment({"PLAIT_API_TOKEN_FILE": str(tmp_path / "missing")})
