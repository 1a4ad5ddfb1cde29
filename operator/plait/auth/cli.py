"""``plait auth bootstrap``, ``plait login`` and ``plait users|roles|tokens``.

``bootstrap`` talks to the database (it makes the first admin, before anyone can sign in);
everything else talks to ``plait api`` over HTTP, so it obeys the same permissions and is
audited the same way. ``plait login`` signs in with a password, creates a personal access
token for this machine and keeps it (with the API's URL) in ``~/.config/plait/credentials.json``
(mode 0600); ``--token``/``PLAIT_API_TOKEN`` override it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import socket
import sys
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import click
import psycopg

from plait.auth.settings import AuthSettings
from plait.errors import PlaitError

__all__ = ["auth_command", "login_command", "roles_command", "tokens_command", "users_command"]

DEFAULT_URL = "http://127.0.0.1:8000"


class CliError(PlaitError):
    """The API refused a request, could not be reached, or no credentials are at hand."""


def credentials_path() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "plait" / "credentials.json"


def _saved() -> dict[str, Any]:
    try:
        data = json.loads(credentials_path().read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _save(url: str, token: str, username: str) -> Path:
    path = credentials_path()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump({"url": url, "token": token, "username": username}, f)
    return path


class Api:
    """A small JSON client of ``plait api`` (standard library only)."""

    def __init__(self, url: str | None, token: str | None) -> None:
        saved = _saved()
        self.base = (url or saved.get("url") or DEFAULT_URL).rstrip("/")
        self.token = token or saved.get("token")

    def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        headers: dict[str, str] | None = None,
        authenticated: bool = True,
    ) -> tuple[Any, dict[str, str]]:
        sent = {"Accept": "application/json", **(headers or {})}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            sent["Content-Type"] = "application/json"
        if authenticated and "Cookie" not in sent:
            if not self.token:
                raise CliError("not signed in: run `plait login`, or pass --token")
            sent["Authorization"] = f"Bearer {self.token}"
        req = urllib.request.Request(self.base + path, data=data, method=method, headers=sent)
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                raw = resp.read()
                return (json.loads(raw) if raw else None), dict(resp.headers)
        except urllib.error.HTTPError as exc:
            raise CliError(_describe(exc)) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise CliError(f"cannot reach the Plait API at {self.base}: {reason}") from None


def _describe(exc: urllib.error.HTTPError) -> str:
    try:
        problem = json.loads(exc.read())
        return f"HTTP {exc.code} {problem['title']}: {problem['detail']}"
    except (ValueError, OSError, KeyError, TypeError):
        return f"HTTP {exc.code} {exc.reason}"


def _client_options(f: Any) -> Any:
    f = click.option(
        "--token",
        envvar="PLAIT_API_TOKEN",
        help="Bearer token (default: the one `plait login` saved).",
    )(f)
    f = click.option(
        "--url",
        envvar="PLAIT_API_URL",
        help=f"Base URL of plait api (default: saved by login, else {DEFAULT_URL}).",
    )(f)
    f = click.option(
        "-o",
        "--output",
        type=click.Choice(["text", "json"]),
        default="text",
        show_default=True,
        help="Output format.",
    )(f)
    return f


def _print(output: str, data: Any, text: str) -> None:
    click.echo(json.dumps(data, indent=2) if output == "json" else text)


def _password(stdin: bool, confirm: bool) -> str:
    if stdin:
        return sys.stdin.readline().rstrip("\n")
    return str(click.prompt("Password", hide_input=True, confirmation_prompt=confirm))


# --- plait login ---------------------------------------------------------------------------


@click.command("login")
@click.option(
    "--url",
    envvar="PLAIT_API_URL",
    default=DEFAULT_URL,
    show_default=True,
    help="Base URL of plait api.",
)
@click.option("-u", "--username", prompt=True, help="Your Plait username.")
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input.")
@click.option(
    "--days",
    type=click.IntRange(1, 365),
    default=30,
    show_default=True,
    help="Lifetime of the token this machine keeps.",
)
def login_command(url: str, username: str, password_stdin: bool, days: int) -> None:
    """Sign in and keep a personal access token for this machine."""
    api = Api(url, None)
    password = _password(password_stdin, confirm=False)
    _, headers = api.call(
        "POST", "/v1/auth/login", {"username": username, "password": password}, authenticated=False
    )
    cookie = headers.get("Set-Cookie", "").split(";", 1)[0]
    session = {"Cookie": cookie}
    expires = (datetime.now(UTC) + timedelta(days=days)).isoformat()
    issued, _ = api.call(
        "POST",
        "/v1/auth/tokens",
        {"name": f"plait login on {socket.gethostname()}"[:100], "expiresAt": expires},
        headers=session,
    )
    api.call("POST", "/v1/auth/logout", headers=session)
    path = _save(api.base, issued["token"], username)
    click.echo(
        f"signed in as {username}; token {issued['prefix']}... (expires {expires[:10]}) "
        f"saved to {path}"
    )


# --- plait users ---------------------------------------------------------------------------


def _user_line(user: dict[str, Any]) -> str:
    grants = ",".join(f"{g['role']}@{g['namespace']}" for g in user["grants"])
    state = "disabled" if user["disabled"] else "enabled"
    return (
        f"{user['username']:<24} {state:<8} roles={','.join(user['roles']) or '-'} "
        f"grants={grants or '-'}"
    )


@click.group("users")
def users_command() -> None:
    """Users of Plait (needs auth:read to list, auth:write to change)."""


@users_command.command("list")
@_client_options
def users_list(url: str | None, token: str | None, output: str) -> None:
    """List users."""
    data, _ = Api(url, token).call("GET", "/v1/auth/users")
    _print(output, data, "\n".join(_user_line(u) for u in data["items"]) or "no users")


@users_command.command("show")
@_client_options
@click.argument("username")
def users_show(url: str | None, token: str | None, output: str, username: str) -> None:
    """Show one user."""
    data, _ = Api(url, token).call("GET", f"/v1/auth/users/{username}")
    _print(output, data, _user_line(data))


@users_command.command("create")
@_client_options
@click.argument("username")
@click.option("--role", "roles", multiple=True, help="A role held everywhere (repeatable).")
@click.option(
    "--grant",
    "grants",
    multiple=True,
    metavar="ROLE@NAMESPACE",
    help="A role held in one namespace (repeatable).",
)
@click.option("--email", help="Email address.")
@click.option("--no-password", is_flag=True, help="A service user: signs in only with tokens.")
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input.")
def users_create(
    url: str | None,
    token: str | None,
    output: str,
    username: str,
    roles: tuple[str, ...],
    grants: tuple[str, ...],
    email: str | None,
    no_password: bool,
    password_stdin: bool,
) -> None:
    """Create a user."""
    body: dict[str, Any] = {"username": username, "roles": list(roles), "grants": []}
    for grant in grants:
        role, sep, namespace = grant.partition("@")
        if not sep or not role or not namespace:
            raise click.BadParameter(f"{grant!r} is not ROLE@NAMESPACE", param_hint="--grant")
        body["grants"].append({"role": role, "namespace": namespace})
    if email:
        body["email"] = email
    if not no_password:
        body["password"] = _password(password_stdin, confirm=not password_stdin)
    data, _ = Api(url, token).call("POST", "/v1/auth/users", body)
    _print(output, data, f"created {_user_line(data)}")


def _set_state(url: str | None, token: str | None, output: str, username: str, verb: str) -> None:
    data, _ = Api(url, token).call("POST", f"/v1/auth/users/{username}/{verb}")
    _print(output, data, _user_line(data))


@users_command.command("disable")
@_client_options
@click.argument("username")
def users_disable(url: str | None, token: str | None, output: str, username: str) -> None:
    """Disable a user: its sessions end and its tokens stop working at once."""
    _set_state(url, token, output, username, "disable")


@users_command.command("enable")
@_client_options
@click.argument("username")
def users_enable(url: str | None, token: str | None, output: str, username: str) -> None:
    """Enable a disabled user again."""
    _set_state(url, token, output, username, "enable")


# --- plait roles ---------------------------------------------------------------------------


def _role_line(role: dict[str, Any]) -> str:
    kind = "built-in" if role["builtin"] else "custom"
    return f"{role['name']:<16} {kind:<8} {','.join(role['permissions'])}"


@click.group("roles")
def roles_command() -> None:
    """Roles: named sets of permissions."""


@roles_command.command("list")
@_client_options
def roles_list(url: str | None, token: str | None, output: str) -> None:
    """List roles."""
    data, _ = Api(url, token).call("GET", "/v1/auth/roles")
    _print(output, data, "\n".join(_role_line(r) for r in data["items"]))


@roles_command.command("show")
@_client_options
@click.argument("name")
def roles_show(url: str | None, token: str | None, output: str, name: str) -> None:
    """Show one role."""
    data, _ = Api(url, token).call("GET", f"/v1/auth/roles/{name}")
    _print(output, data, _role_line(data))


@roles_command.command("create")
@_client_options
@click.argument("name")
@click.option(
    "--permission",
    "permissions",
    multiple=True,
    required=True,
    help="A permission, e.g. events:publish (repeatable).",
)
@click.option("--description", default="", help="What the role is for.")
def roles_create(
    url: str | None,
    token: str | None,
    output: str,
    name: str,
    permissions: tuple[str, ...],
    description: str,
) -> None:
    """Define a role."""
    body = {"name": name, "permissions": list(permissions), "description": description}
    data, _ = Api(url, token).call("POST", "/v1/auth/roles", body)
    _print(output, data, f"created {_role_line(data)}")


@roles_command.command("delete")
@_client_options
@click.argument("name")
def roles_delete(url: str | None, token: str | None, output: str, name: str) -> None:
    """Delete a role no one holds (built-in roles stay)."""
    Api(url, token).call("DELETE", f"/v1/auth/roles/{name}")
    _print(output, {"deleted": name}, f"deleted role {name}")


# --- plait tokens --------------------------------------------------------------------------


def _token_line(t: dict[str, Any]) -> str:
    state = "revoked" if t["revokedAt"] else "active"
    return (
        f"{t['id']}  {t['prefix']}...  {t['owner']:<16} {state:<7} "
        f"expires={(t['expiresAt'] or 'never')[:19]} "
        f"last-used={(t['lastUsedAt'] or 'never')[:19]} "
        f"scopes={','.join(t['scopes']) if t['scopes'] is not None else 'all'}  {t['name']}"
    )


def _tokens_path(user: str | None) -> str:
    return f"/v1/auth/users/{user}/tokens" if user else "/v1/auth/tokens"


_user_option = click.option("--user", help="Another user's tokens (an administrator's view).")


@click.group("tokens")
def tokens_command() -> None:
    """API tokens: personal ones, and service tokens of other users (administrators)."""


@tokens_command.command("list")
@_client_options
@_user_option
def tokens_list(url: str | None, token: str | None, output: str, user: str | None) -> None:
    """List tokens (yours, or --user's)."""
    data, _ = Api(url, token).call("GET", _tokens_path(user))
    _print(output, data, "\n".join(_token_line(t) for t in data["items"]) or "no tokens")


@tokens_command.command("show")
@_client_options
@click.argument("token_id")
def tokens_show(url: str | None, token: str | None, output: str, token_id: str) -> None:
    """Show one of your tokens (never its secret)."""
    data, _ = Api(url, token).call("GET", f"/v1/auth/tokens/{token_id}")
    _print(output, data, _token_line(data))


@tokens_command.command("create")
@_client_options
@_user_option
@click.argument("name")
@click.option(
    "--scope",
    "scopes",
    multiple=True,
    help="A permission the token may use (repeatable; default: all of the owner's).",
)
@click.option("--expires-in", "days", type=click.IntRange(min=1), help="Days until it expires.")
def tokens_create(
    url: str | None,
    token: str | None,
    output: str,
    user: str | None,
    name: str,
    scopes: tuple[str, ...],
    days: int | None,
) -> None:
    """Create a token: yours, or a service token of --user. It is printed this once."""
    body: dict[str, Any] = {"name": name}
    if scopes:
        body["scopes"] = list(scopes)
    if days:
        body["expiresAt"] = (datetime.now(UTC) + timedelta(days=days)).isoformat()
    data, _ = Api(url, token).call("POST", _tokens_path(user), body)
    _print(output, data, f"{data['token']}\n(shown once: store it now) {_token_line(data)}")


@tokens_command.command("revoke")
@_client_options
@_user_option
@click.argument("token_id")
def tokens_revoke(
    url: str | None, token: str | None, output: str, user: str | None, token_id: str
) -> None:
    """Revoke a token (yours, or --user's); it stops working on the next request."""
    data, _ = Api(url, token).call("POST", f"{_tokens_path(user)}/{token_id}/revoke")
    _print(output, data, f"revoked {_token_line(data)}")


# --- plait auth bootstrap ------------------------------------------------------------------


@click.group("auth")
def auth_command() -> None:
    """Setting up accounts (talks to the database)."""


@auth_command.command("bootstrap")
@click.option("--username", default="admin", show_default=True, help="The first admin's name.")
@click.option(
    "--password-file",
    type=click.Path(dir_okay=False, exists=True),
    help="Take the password from this file (a mounted Secret) instead of "
    "generating and printing one.",
)
@click.option(
    "--if-missing",
    is_flag=True,
    help="Succeed without doing anything when an enabled admin exists.",
)
def bootstrap_command(username: str, password_file: str | None, if_missing: bool) -> None:
    """Create the first admin, once. Without --password-file a password is generated and
    printed this one time (it is stored only as an argon2id hash)."""
    from plait.auth import repository
    from plait.auth.service import AuthService
    from plait.kernel.components import component_by_name
    from plait.kernel.config import Settings

    dsn = Settings().database_url_for(component_by_name("auth"))
    if password_file is not None:
        password = Path(password_file).read_text().strip()
        generated = False
    else:
        password = secrets.token_urlsafe(18)
        generated = True

    @contextlib.asynccontextmanager
    async def connect() -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        async with await psycopg.AsyncConnection.connect(dsn) as conn:
            yield conn

    async def run() -> bool:
        async with connect() as conn:
            if if_missing and await repository.admin_exists(conn):
                return False
        await AuthService(connect, AuthSettings()).bootstrap(username, password)
        return True

    if not asyncio.run(run()):
        click.echo("an enabled admin exists already; nothing done")
        return
    if generated:
        click.echo(f"created admin {username!r}; its password (shown once): {password}")
    else:
        click.echo(f"created admin {username!r} with the password from {password_file}")
