"""``plait auth bootstrap``, ``plait login`` and ``plait users|roles|tokens`` against a real
``plait api`` process and database."""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from plait.testing import PostgresServer
from tests.api.conftest import start_api  # noqa: F401 (the fixture)
from tests.auth.conftest import assert_no_secret_in_dump


def plait(env: dict[str, str], *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "plait", *args],
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_bootstrap_login_and_administration(
    start_api: Callable[..., int],  # noqa: F811
    migrated_database: str,
    postgres_server: PostgresServer,
    tmp_path: Path,
) -> None:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("PLAIT_API", "PLAIT_AUTH"))},
        "PLAIT_DATABASE_URL": migrated_database,
        "XDG_CONFIG_HOME": str(tmp_path),
    }
    first = plait(env, "auth", "bootstrap")
    assert first.returncode == 0, first.stderr
    password = re.search(r"password \(shown once\): (\S+)", first.stdout)
    assert password is not None
    admin_password = password.group(1)
    again = plait(env, "auth", "bootstrap")
    assert again.returncode == 1
    assert "an enabled admin exists already" in again.stderr
    assert plait(env, "auth", "bootstrap", "--if-missing").stdout.startswith("an enabled admin")

    port = start_api(migrated_database)
    env["PLAIT_API_URL"] = f"http://127.0.0.1:{port}"
    wrong = plait(env, "login", "-u", "admin", "--password-stdin", stdin="not-it\n")
    assert wrong.returncode == 1
    assert "HTTP 401 Unauthorized: wrong username or password" in wrong.stderr
    login = plait(env, "login", "-u", "admin", "--password-stdin", stdin=admin_password + "\n")
    assert login.returncode == 0, login.stderr
    saved = tmp_path / "plait" / "credentials.json"
    assert stat.S_IMODE(saved.stat().st_mode) == 0o600
    cli_token = json.loads(saved.read_text())["token"]
    assert cli_token.startswith("plait_pat_")

    weak = plait(env, "users", "create", "ada", "--password-stdin", stdin="short\n")
    assert weak.returncode == 1
    assert "at least 12 are required" in weak.stderr
    unknown = plait(env, "users", "create", "bob", "--role", "wizard", "--no-password")
    assert unknown.returncode == 1
    assert "unknown role(s) wizard" in unknown.stderr
    ada_password = "a long passphrase, 42 times"
    made = plait(
        env,
        "users",
        "create",
        "ada",
        "--role",
        "viewer",
        "--grant",
        "editor@shop",
        "--password-stdin",
        stdin=ada_password + "\n",
    )
    assert made.returncode == 0, made.stderr
    assert "roles=viewer grants=editor@shop" in made.stdout

    wide = plait(env, "tokens", "create", "ci", "--user", "ada", "--scope", "auth:write")
    assert wide.returncode == 1
    assert "wider than the permissions of 'ada'" in wide.stderr
    created = plait(
        env, "tokens", "create", "ci", "--user", "ada", "--scope", "events:publish", "-o", "json"
    )
    assert created.returncode == 0, created.stderr
    issued = json.loads(created.stdout)
    listed = plait(env, "tokens", "list", "--user", "ada")
    assert issued["id"] in listed.stdout
    assert issued["token"] not in listed.stdout
    assert "scopes=events:publish" in listed.stdout
    revoked = plait(env, "tokens", "revoke", "--user", "ada", issued["id"])
    assert revoked.returncode == 0, revoked.stderr
    assert " revoked " in revoked.stdout
    assert "disabled" in plait(env, "users", "disable", "ada").stdout
    assert "publisher" in plait(env, "roles", "list").stdout

    # The administrator's token works for the API, a disabled user's password does not.
    relog = plait(env, "login", "-u", "ada", "--password-stdin", stdin=ada_password + "\n")
    assert "user 'ada' is disabled" in relog.stderr
    assert_no_secret_in_dump(
        postgres_server,
        migrated_database,
        {admin_password, ada_password, cli_token, issued["token"]},
    )
