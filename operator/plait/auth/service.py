"""Authentication and account administration, independent of HTTP.

:class:`AuthService` turns a presented credential (a Plait token, a session cookie, a
Kubernetes ServiceAccount token) into a :class:`~plait.auth.permissions.Principal`, reading
the database on every request: a revoked token, an ended session or a disabled user is
refused on the very next request, on every API replica. It also signs people in, issues
tokens and changes accounts, each change audited.
"""

from __future__ import annotations

import math
import re
import uuid
from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from kubernetes.client.exceptions import ApiException
from psycopg import AsyncConnection

from plait.auth import audit, passwords, secrets
from plait.auth import repository as repo
from plait.auth.kubernetes import TokenReviewer
from plait.auth.oidc import OidcIdentity, Provider
from plait.auth.permissions import Principal, grants
from plait.auth.settings import AuthSettings, RoleMapping
from plait.auth.throttle import LoginThrottle
from plait.errors import NotFoundError, PlaitError, ValidationError

__all__ = [
    "AuthService",
    "AuthenticationFailed",
    "IssuedToken",
    "LoginThrottled",
    "NewGrant",
    "NewSession",
]

Connect = Callable[[], AbstractAsyncContextManager[AsyncConnection[Any]]]
_USERNAME = re.compile(r"^[a-z0-9][a-z0-9._@-]{0,127}$")
_NAMESPACE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
#: A token used again within this many seconds does not update its last-used time.
_TOUCH_SECONDS = 60.0


class AuthenticationFailed(PlaitError):
    """No or bad credentials (HTTP 401); ``reason`` is the metric label."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


class LoginThrottled(PlaitError):
    """Too many failed logins for this user or address: wait ``retry_after`` seconds."""

    def __init__(self, retry_after: float) -> None:
        super().__init__(f"too many failed sign-ins; retry in {math.ceil(retry_after)} s")
        self.retry_after = retry_after


@dataclass(frozen=True, slots=True)
class NewGrant:
    role: str
    namespace: str


@dataclass(frozen=True, slots=True)
class IssuedToken:
    """A token as created: the secret itself is here and nowhere else, ever."""

    secret: str
    token: repo.Token


@dataclass(frozen=True, slots=True)
class NewSession:
    secret: str
    session: repo.Session
    user: repo.User


def _principal(
    authority: repo.Authority,
    method: Any,
    *,
    scopes: Sequence[str] | None = None,
    token_id: uuid.UUID | None = None,
    session_id: uuid.UUID | None = None,
) -> Principal:
    return Principal(
        name=authority.username,
        kind="user",
        method=method,
        everywhere=authority.everywhere,
        by_namespace=authority.by_namespace,
        scopes=frozenset(scopes) if scopes is not None else None,
        user_id=authority.user_id,
        token_id=token_id,
        session_id=session_id,
    )


def _when(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class AuthService:
    def __init__(self, connect: Connect, settings: AuthSettings) -> None:
        self._connect = connect
        self.settings = settings
        self.throttle = LoginThrottle(
            settings.throttle_free_failures,
            settings.throttle_base_seconds,
            settings.throttle_max_seconds,
        )
        self._reviewer = (
            TokenReviewer(settings.kubernetes) if settings.kubernetes is not None else None
        )
        #: The OpenID provider of single sign-on (None: not configured).
        self.oidc = Provider(settings.oidc) if settings.oidc is not None else None

    def close(self) -> None:
        if self._reviewer is not None:
            self._reviewer.close()

    def _key(self, method: str, *, issuing: bool = False) -> secrets.SecretKey:
        if self.settings.key is None:
            detail = (
                f"this server has no token key ({secrets.KEY_FILE_ENV}), so it "
                f"{'cannot issue' if issuing else 'accepts no'} Plait {method}"
            )
            if issuing:
                raise ValidationError(detail)
            raise AuthenticationFailed("not-configured", detail)
        return self.settings.key

    def flow_key(self) -> secrets.SecretKey:
        """The key that seals a single sign-on flow's cookie (a ValidationError without)."""
        return self._key("single sign-on", issuing=True)

    # --- authentication ------------------------------------------------------------------

    async def authenticate_token(self, presented: str, client: str | None) -> Principal:
        """A Plait API token (``plait_pat_``/``plait_svc_``) as a principal, or 401."""
        try:
            kind = secrets.parse(presented)
        except secrets.MalformedToken as exc:
            raise self._fail("token", "malformed", str(exc), client) from None
        if kind == "ses":
            raise self._fail("token", "malformed", "a session cookie is not a bearer token", client)
        key = self._key("tokens")
        async with self._connect() as conn:
            found = await repo.find_token(conn, key.digest(presented))
            if found is None:
                raise self._fail(
                    "token", "unknown", "no such token (deleted, or never issued)", client
                )
            token, authority = found
            now = datetime.now(UTC)
            if token.revoked_at is not None:
                raise self._fail(
                    "token",
                    "revoked",
                    f"the token was revoked at {_when(token.revoked_at)}",
                    client,
                    token_id=str(token.id),
                )
            if token.expires_at is not None and token.expires_at <= now:
                raise self._fail(
                    "token",
                    "expired",
                    f"the token expired at {_when(token.expires_at)}",
                    client,
                    token_id=str(token.id),
                )
            if authority.disabled:
                raise self._fail(
                    "token",
                    "disabled",
                    f"user {authority.username!r} is disabled",
                    client,
                    token_id=str(token.id),
                )
            if (
                token.last_used_at is None
                or (now - token.last_used_at).total_seconds() > _TOUCH_SECONDS
            ):
                await repo.touch_token(conn, token.id, client)
        audit.success("token")
        return _principal(authority, "token", scopes=token.scopes, token_id=token.id)

    async def authenticate_session(self, cookie: str, client: str | None) -> Principal:
        """A session cookie as a principal (refreshing its idle expiry), or 401."""
        try:
            kind = secrets.parse(cookie)
        except secrets.MalformedToken as exc:
            raise self._fail("session", "malformed", f"session cookie: {exc}", client) from None
        if kind != "ses":
            raise self._fail("session", "malformed", "the session cookie holds no session", client)
        key = self._key("sessions")
        async with self._connect() as conn:
            found = await repo.find_session(conn, key.digest(cookie))
            if found is None:
                raise self._fail("session", "unknown", "no such session; sign in again", client)
            session, authority = found
            now = datetime.now(UTC)
            if session.revoked_at is not None:
                raise self._fail(
                    "session",
                    "revoked",
                    "the session has ended (signed out or disabled); sign in again",
                    client,
                )
            if session.expires_at <= now:
                raise self._fail(
                    "session",
                    "expired",
                    f"the session reached its absolute limit at "
                    f"{_when(session.expires_at)}; sign in again",
                    client,
                )
            if session.idle_expires_at <= now:
                raise self._fail(
                    "session",
                    "expired",
                    f"the session expired after inactivity at "
                    f"{_when(session.idle_expires_at)}; sign in again",
                    client,
                )
            if authority.disabled:
                raise self._fail(
                    "session", "disabled", f"user {authority.username!r} is disabled", client
                )
            idle = self.settings.session_idle_seconds
            if (now - session.refreshed_at).total_seconds() > min(_TOUCH_SECONDS, idle / 4):
                await repo.refresh_session(conn, session.id, idle)
        audit.success("session")
        return _principal(authority, "session", session_id=session.id)

    @property
    def kubernetes_enabled(self) -> bool:
        return self._reviewer is not None

    async def authenticate_kubernetes(self, presented: str, client: str | None) -> Principal:
        """A ServiceAccount (or any Kubernetes) token, by TokenReview, mapped to roles."""
        assert self._reviewer is not None
        assert self.settings.kubernetes is not None
        try:
            identity = await self._reviewer.review(presented)
        except ApiException as exc:
            raise self._fail(
                "kubernetes",
                "review-failed",
                f"the Kubernetes API server could not review the token (HTTP {exc.status})",
                client,
            ) from None
        if identity is None:
            raise self._fail(
                "kubernetes",
                "rejected",
                "the Kubernetes API server does not accept this token",
                client,
            )
        mappings = [
            m
            for m in self.settings.kubernetes.mappings
            if m.matches(identity.username, identity.groups)
        ]
        if not mappings:
            raise self._fail(
                "kubernetes",
                "unmapped",
                f"{identity.username} is a valid Kubernetes identity but no role "
                "mapping names it or its groups",
                client,
            )
        principal = await self.mapped_principal(identity.username, "kubernetes", mappings)
        audit.success("kubernetes")
        return principal

    async def mapped_principal(
        self, name: str, kind: Any, mappings: Sequence[RoleMapping]
    ) -> Principal:
        """A principal holding the roles of ``mappings`` (unknown roles grant nothing)."""
        async with self._connect() as conn:
            roles = await repo.role_permissions(conn, [m.role for m in mappings])
        everywhere: set[str] = set()
        by_namespace: dict[str, set[str]] = {}
        for mapping in mappings:
            held = roles.get(mapping.role, set())
            if not mapping.namespaces:
                everywhere |= held
            for namespace in mapping.namespaces:
                by_namespace.setdefault(namespace, set()).update(held)
        return Principal(
            name=name,
            kind=kind,
            method=kind,
            everywhere=frozenset(everywhere),
            by_namespace={ns: frozenset(p) for ns, p in by_namespace.items()},
        )

    def _fail(
        self, method: str, reason: str, detail: str, client: str | None, **who: Any
    ) -> AuthenticationFailed:
        audit.failure(method, reason, detail, client=client, **who)
        return AuthenticationFailed(reason, detail)

    # --- sign-in -------------------------------------------------------------------------

    async def login(self, username: str, password: str, client: str | None) -> NewSession:
        """Username and password to a new session; slowed down after repeated failures."""
        wait = self.throttle.wait(username, client)
        if wait > 0:
            audit.THROTTLED.inc()
            audit.failure(
                "password",
                "throttled",
                "sign-in refused until earlier failures age",
                client=client,
                username=username,
            )
            raise LoginThrottled(wait)
        key = self._key("sessions")
        async with self._connect() as conn:
            user = await repo.get_user(conn, username) if _USERNAME.match(username) else None
            ok = await passwords.verify_password_async(
                password, user.password_hash if user else None
            )
            if user is None or not ok:
                self.throttle.failed(username, client)
                raise self._fail(
                    "password",
                    "bad-credentials",
                    "wrong username or password",
                    client,
                    username=username,
                )
            self.throttle.succeeded(username)
            if user.disabled_at is not None:
                raise self._fail(
                    "password",
                    "disabled",
                    f"user {username!r} is disabled",
                    client,
                    username=username,
                )
            secret = secrets.new_secret("ses")
            session = await repo.insert_session(
                conn,
                user_id=user.id,
                secret_hash=key.digest(secret),
                method="password",
                client_address=client,
                idle_seconds=self.settings.session_idle_seconds,
                absolute_seconds=self.settings.session_absolute_seconds,
            )
            await repo.record_login(conn, user.id)
        audit.success("password")
        audit.change("session.create", username, f"session {session.id}", client=client)
        return NewSession(secret, session, user)

    async def sso_login(self, identity: OidcIdentity, client: str | None) -> NewSession:
        """A session for a person the identity provider vouched for, with the roles its
        groups map to (recorded on the user at each sign-in)."""
        assert self.settings.oidc is not None
        who = {"username": identity.username, "issuer": identity.issuer}
        mappings = [
            m for m in self.settings.oidc.mappings if m.matches(identity.username, identity.groups)
        ]
        if not mappings:
            raise self._fail(
                "oidc",
                "unmapped",
                f"{identity.username} signed in at the identity "
                "provider, but no role mapping names the user or its groups "
                f"({', '.join(sorted(identity.groups)) or 'none'})",
                client,
                **who,
            )
        if not _USERNAME.match(identity.username):
            raise self._fail(
                "oidc",
                "bad-username",
                f"{identity.username[:80]!r} (claim "
                f"{self.settings.oidc.username_claim}) is not a Plait username",
                client,
                **who,
            )
        roles = sorted({m.role for m in mappings if not m.namespaces})
        grants_ = sorted(
            {repo.Grant(m.role, ns) for m in mappings for ns in m.namespaces},
            key=lambda g: (g.namespace, g.role),
        )
        key = self._key("sessions")
        async with self._connect() as conn, conn.transaction():
            try:
                user = await repo.upsert_sso_user(
                    conn,
                    issuer=identity.issuer,
                    subject=identity.subject,
                    username=identity.username,
                    email=identity.email,
                    display_name=identity.name,
                    roles=roles,
                    grants=grants_,
                )
            except ValidationError as exc:
                raise self._fail("oidc", "conflict", str(exc), client, **who) from None
            if user.disabled_at is not None:
                raise self._fail(
                    "oidc", "disabled", f"user {user.username!r} is disabled", client, **who
                )
            secret = secrets.new_secret("ses")
            session = await repo.insert_session(
                conn,
                user_id=user.id,
                secret_hash=key.digest(secret),
                method="oidc",
                client_address=client,
                idle_seconds=self.settings.session_idle_seconds,
                absolute_seconds=self.settings.session_absolute_seconds,
            )
            await repo.record_login(conn, user.id)
        audit.success("oidc")
        audit.change(
            "session.create",
            user.username,
            f"session {session.id} (single sign-on)",
            client=client,
            roles=roles,
            grants=[f"{g.role}@{g.namespace}" for g in grants_],
        )
        return NewSession(secret, session, user)

    async def logout(self, principal: Principal, client: str | None) -> None:
        if principal.session_id is None:
            raise ValidationError(
                "this request carries no session (sign out ends a session "
                "cookie; revoke a token instead)"
            )
        async with self._connect() as conn:
            await repo.revoke_session(conn, principal.session_id)
        audit.change(
            "session.end", principal.name, f"session {principal.session_id}", client=client
        )

    # --- tokens ----------------------------------------------------------------------------

    async def issue_token(
        self,
        creator: Principal,
        owner: str,
        *,
        name: str,
        scopes: Sequence[str] | None,
        expires_at: datetime | None,
        kind: str,
        client: str | None,
    ) -> IssuedToken:
        """A new token for ``owner``; its scope must lie within the owner's permissions and
        within the creator's own token scope (a token cannot mint a wider one)."""
        key = self._key("tokens", issuing=True)
        if expires_at is not None and expires_at <= datetime.now(UTC):
            raise ValidationError(f"expiresAt {_when(expires_at)} is in the past")
        if scopes is None and creator.scopes is not None and creator.user_id is not None:
            scopes = sorted(creator.scopes)
        async with self._connect() as conn:
            user = await repo.get_user(conn, owner)
            if user is None:
                raise NotFoundError(f"no user {owner!r}")
            authority = await repo.authority_of(conn, user.id)
            assert authority is not None
            if authority.disabled:
                raise ValidationError(f"user {owner!r} is disabled; enable it first")
            if scopes is not None:
                scopes = sorted(set(scopes))
                unknown = sorted(set(scopes) - await repo.known_permissions(conn))
                if unknown:
                    raise ValidationError(f"unknown permission(s) in scope: {', '.join(unknown)}")
                held = _principal(authority, "token").all_permissions()
                wider = [s for s in scopes if not grants(held, s)]
                if wider:
                    raise ValidationError(
                        f"scope {', '.join(wider)} is wider than the permissions of "
                        f"{owner!r} ({', '.join(sorted(held)) or 'none'})"
                    )
                if creator.scopes is not None:
                    beyond = [s for s in scopes if not grants(creator.scopes, s)]
                    if beyond:
                        raise ValidationError(
                            f"scope {', '.join(beyond)} is wider than the scope of the token "
                            "making this request"
                        )
            secret = secrets.new_secret("pat" if kind == "personal" else "svc")
            token = await repo.insert_token(
                conn,
                user_id=user.id,
                name=name,
                kind=kind,
                token_hash=key.digest(secret),
                display_prefix=secrets.display_prefix(secret),
                scopes=scopes,
                expires_at=expires_at,
                created_by=creator.name,
            )
        audit.change(
            "token.create",
            creator.name,
            f"token {token.id} of {owner}",
            client=client,
            scopes=scopes,
            kind=kind,
        )
        return IssuedToken(secret, token)

    async def list_tokens(self, owner: str) -> list[repo.Token]:
        async with self._connect() as conn:
            user = await self._user(conn, owner)
            return await repo.list_tokens(conn, user.id)

    async def get_token(self, owner: str, token_id: uuid.UUID) -> repo.Token:
        async with self._connect() as conn:
            user = await self._user(conn, owner)
            token = await repo.get_token(conn, token_id, user.id)
        if token is None:
            raise NotFoundError(f"no token {token_id} of user {owner!r}")
        return token

    async def revoke_token(
        self, actor: Principal, owner: str, token_id: uuid.UUID, client: str | None
    ) -> repo.Token:
        async with self._connect() as conn:
            user = await self._user(conn, owner)
            token = await repo.revoke_token(conn, token_id, user.id)
        audit.change("token.revoke", actor.name, f"token {token_id} of {owner}", client=client)
        return token

    # --- users and roles -----------------------------------------------------------------

    @staticmethod
    async def _user(conn: AsyncConnection[Any], username: str) -> repo.User:
        user = await repo.get_user(conn, username)
        if user is None:
            raise NotFoundError(f"no user {username!r}")
        return user

    async def create_user(
        self,
        actor: str,
        username: str,
        *,
        password: str | None,
        roles: Sequence[str] = (),
        grants_: Sequence[NewGrant] = (),
        email: str | None = None,
        display_name: str = "",
        client: str | None = None,
    ) -> repo.User:
        """A new user (all of it or, on any bad input, nothing)."""
        if not _USERNAME.match(username):
            raise ValidationError(
                f"{username[:80]!r} is not a username: lower-case letters, digits and . _ @ -, "
                "starting with a letter or digit, at most 128 characters"
            )
        for grant in grants_:
            if not _NAMESPACE.match(grant.namespace) or len(grant.namespace) > 63:
                raise ValidationError(f"{grant.namespace[:80]!r} is not a namespace name")
        password_hash = None
        if password is not None:
            passwords.check_policy(password, username)
            password_hash = await passwords.hash_password_async(password)
        async with self._connect() as conn, conn.transaction():
            if await repo.get_user(conn, username) is not None:
                raise ValidationError(f"a user named {username!r} exists already")
            known = {r.name for r in await repo.list_roles(conn)}
            unknown = sorted({*roles, *(g.role for g in grants_)} - known)
            if unknown:
                raise ValidationError(
                    f"unknown role(s) {', '.join(unknown)}; roles are {', '.join(sorted(known))}"
                )
            try:
                user = await repo.create_user(
                    conn,
                    username,
                    email=email,
                    display_name=display_name,
                    password_hash=password_hash,
                    roles=roles,
                )
            except Exception as exc:
                constraint = getattr(getattr(exc, "diag", None), "constraint_name", None)
                if constraint == "users_one_per_email":
                    raise ValidationError(f"another user has the email {email!r}") from None
                if constraint == "users_email_format":
                    raise ValidationError(f"{email!r} is not an email address") from None
                raise
            for grant in grants_:
                await repo.add_grant(conn, user.id, grant.role, grant.namespace)
        audit.change(
            "user.create",
            actor,
            username,
            client=client,
            roles=list(roles),
            grants=[f"{g.role}@{g.namespace}" for g in grants_],
        )
        return user

    async def set_disabled(
        self, actor: str, username: str, disabled: bool, client: str | None
    ) -> repo.User:
        async with self._connect() as conn:
            user = await repo.set_disabled(conn, username, disabled)
        audit.change("user.disable" if disabled else "user.enable", actor, username, client=client)
        return user

    async def user_and_grants(self, username: str) -> tuple[repo.User, list[repo.Grant]]:
        async with self._connect() as conn:
            user = await self._user(conn, username)
            return user, await repo.grants_of(conn, user.id)

    async def list_users(self) -> list[tuple[repo.User, list[repo.Grant]]]:
        async with self._connect() as conn:
            users = await repo.list_users(conn)
            return [(u, await repo.grants_of(conn, u.id)) for u in users]

    async def list_roles(self) -> list[repo.Role]:
        async with self._connect() as conn:
            return await repo.list_roles(conn)

    async def get_role(self, name: str) -> repo.Role:
        async with self._connect() as conn:
            role = await repo.get_role(conn, name)
        if role is None:
            raise NotFoundError(f"no role {name!r}")
        return role

    async def create_role(
        self,
        actor: str,
        name: str,
        description: str,
        permissions: Sequence[str],
        client: str | None,
    ) -> repo.Role:
        async with self._connect() as conn:
            role = await repo.create_role(conn, name, description, permissions)
        audit.change("role.create", actor, name, client=client, permissions=list(permissions))
        return role

    async def delete_role(self, actor: str, name: str, client: str | None) -> None:
        async with self._connect() as conn:
            await repo.delete_role(conn, name)
        audit.change("role.delete", actor, name, client=client)

    async def bootstrap(self, username: str, password: str) -> repo.User:
        """The first admin; refused once an enabled admin exists."""
        async with self._connect() as conn:
            if await repo.admin_exists(conn):
                raise ValidationError(
                    "an enabled admin exists already; bootstrap runs only on a fresh install"
                )
        return await self.create_user("bootstrap", username, password=password, roles=["admin"])
