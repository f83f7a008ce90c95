"""Who is calling: API keys from ``auth`` settings, checked in constant time by a pure-ASGI
middleware that leaves an :class:`Access` in the request's state.

A tenant key reaches only its tenant's users: user ids are stored as ``<tenant>/<user>``
(``/`` is not allowed in an id, so namespaced ids cannot collide with plain ones) and shown
without the prefix. An admin key reaches everything, or one tenant named in ``X-Mnemo-Tenant``.
With no keys configured the API is open (every caller is admin) and binds loopback only.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import ipaddress
import logging
from dataclasses import dataclass

from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.api_paths import is_memory_path
from gateway.errors import GatewayError, error_response
from gateway.identity import MemoryContext, validate_id
from mnemo.config import AuthSettings, Settings
from mnemo.errors import ConfigError

logger = logging.getLogger(__name__)

KEY_HEADER = "x-mnemo-api-key"
TENANT_HEADER = "x-mnemo-tenant"
# Authorization on these paths is the client's upstream key (pass-through), never a Mnemo key.
PROXY_PATHS = frozenset({"/v1/chat/completions", "/v1/responses", "/v1/messages", "/v1/models"})
GUARDED_PREFIXES = ("/v1/", "/mem0/")


def carries_upstream_key(path: str, memory_prefix: str = "/v1") -> bool:
    """Whether Authorization on ``path`` is the client's upstream key: on the chat and model
    endpoints and on every /v1/ path relayed upstream (all but the memory API's). There a Mnemo
    key must come in X-Mnemo-Api-Key, so a Mnemo key is never relayed to the upstream."""
    return path in PROXY_PATHS or (path.startswith("/v1/") and not is_memory_path(path, memory_prefix))


@dataclass(frozen=True)
class Access:
    tenant: str | None  # None: the plain (un-namespaced) user ids
    admin: bool

    def user(self, user_id: str) -> str:
        """The stored id of a user id the caller sent."""
        return f"{self.tenant}/{user_id}" if self.tenant else user_id

    def public_user(self, stored: str) -> str:
        prefix = f"{self.tenant}/"
        return stored[len(prefix) :] if self.tenant and stored.startswith(prefix) else stored

    def sees(self, stored_user: str) -> bool:
        if self.tenant is not None:
            return stored_user.startswith(f"{self.tenant}/")
        return self.admin


def _digest(key: str) -> bytes:
    # Hashing first gives compare_digest equal-length inputs, so a key's length does not leak either.
    return hashlib.sha256(key.encode()).digest()


class KeyRing:
    def __init__(self, auth: AuthSettings) -> None:
        self.configured = auth.configured
        self._keys: list[tuple[bytes, str | None]] = [(_digest(k.get_secret_value()), None) for k in auth.admin_keys]
        self._keys += [(_digest(key.get_secret_value()), t.id) for t in auth.tenants for key in t.keys]

    def find(self, presented: str) -> Access | None:
        wanted, found = _digest(presented), None
        for digest, tenant in self._keys:  # no early exit: every key is compared
            if hmac.compare_digest(digest, wanted):
                found = Access(tenant=tenant, admin=tenant is None)
        return found


def presented_key(headers: Headers, path: str, memory_prefix: str = "/v1") -> str | None:
    if key := headers.get(KEY_HEADER):
        return key.strip()
    if carries_upstream_key(path, memory_prefix):
        return None
    scheme, _, credentials = (headers.get("authorization") or "").partition(" ")
    if scheme.lower() not in ("bearer", "token"):  # "Token" is what the mem0 SDK sends
        return None
    return credentials.strip() or None


def unauthorized(message: str, code: str) -> GatewayError:
    return GatewayError(401, message, type="invalid_request_error", code=code)


def resolve_access(keys: KeyRing, headers: Headers, path: str, memory_prefix: str = "/v1") -> Access:
    tenant_header = headers.get(TENANT_HEADER) or None
    if not keys.configured:
        return Access(tenant=validate_id(tenant_header, TENANT_HEADER) if tenant_header else None, admin=True)
    key = presented_key(headers, path, memory_prefix)
    if key is None:
        upstream_key = carries_upstream_key(path, memory_prefix)
        where = "X-Mnemo-Api-Key" if upstream_key else "Authorization: Bearer <key> or X-Mnemo-Api-Key"
        raise unauthorized(f"a Mnemo API key is required in {where}", "missing_api_key")
    access = keys.find(key)
    if access is None:
        raise unauthorized("invalid Mnemo API key", "invalid_api_key")
    if access.admin and tenant_header:
        return Access(tenant=validate_id(tenant_header, TENANT_HEADER), admin=True)
    return access


class KeyAuth:
    """Checks the key of every /v1/, /mem0/ and memory API request; leaves ``access`` in the request state."""

    def __init__(self, app: ASGIApp, auth: AuthSettings, memory_prefix: str = "/v1") -> None:
        self.app = app
        self.keys = KeyRing(auth)
        self.memory_prefix = memory_prefix
        self.guarded = (*GUARDED_PREFIXES, memory_prefix + "/")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(self.guarded):
            await self.app(scope, receive, send)
            return
        try:
            access = resolve_access(self.keys, Headers(scope=scope), scope["path"], self.memory_prefix)
        except GatewayError as exc:
            challenge = {"www-authenticate": "Bearer"} if exc.status == 401 else None
            await error_response(scope["path"], exc, challenge)(scope, receive, send)
            return
        scope.setdefault("state", {})["access"] = access
        await self.app(scope, receive, send)


def access_of(request: Request) -> Access:
    access = getattr(request.state, "access", None)
    if not isinstance(access, Access):  # fail closed if the middleware did not run
        raise unauthorized("no API key was checked for this request", "missing_api_key")
    return access


def scoped_context(context: MemoryContext, access: Access) -> MemoryContext:
    """A chat request's memory context with its user id namespaced by the caller's tenant."""
    if context.scope is None or access.tenant is None:
        return context
    scope = context.scope.model_copy(update={"user_id": access.user(context.scope.user_id)})
    return dataclasses.replace(context, scope=scope)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_exposure(settings: Settings) -> None:
    """Without keys the API is open: refuse a non-loopback host unless explicitly allowed."""
    host = settings.server.host
    if settings.auth.configured:
        return
    if is_loopback(host):
        logger.info("no API keys configured: the API is open to anyone on this machine (bound to %s)", host)
    elif settings.server.allow_open_network:
        logger.warning("no API keys configured and server.allow_open_network is set: the API is open on %s", host)
    else:
        raise ConfigError(
            f"server.host {host} is not a loopback address and no auth keys are configured: configure "
            "auth.admin_keys / auth.tenants, or set server.allow_open_network: true to serve an open API"
        )
