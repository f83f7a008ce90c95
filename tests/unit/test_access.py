"""API keys and tenants: which key is which, where a key may come from, how user ids are
namespaced, and when an open (keyless) gateway may bind a non-loopback host."""

from __future__ import annotations

import logging

import pytest
from starlette.datastructures import Headers

from gateway.access import Access, KeyRing, check_exposure, resolve_access, scoped_context
from gateway.errors import GatewayError
from gateway.identity import MemoryContext
from mnemo.config import AuthSettings, Settings, load_settings
from mnemo.errors import ConfigError
from mnemo.models import Scope

ADMIN, ACME = "admin-key-0123456789abcdef", "acme-key-0123456789abcdef"
AUTH = AuthSettings.model_validate({"admin_keys": [ADMIN], "tenants": [{"id": "acme", "keys": [ACME]}]})


def access(headers: dict[str, str], path: str = "/v1/memories", auth: AuthSettings = AUTH) -> Access:
    return resolve_access(KeyRing(auth), Headers(headers), path)


def status(headers: dict[str, str], path: str = "/v1/memories") -> int:
    with pytest.raises(GatewayError) as caught:
        access(headers, path)
    return caught.value.status


def test_a_key_is_read_from_bearer_token_or_the_mnemo_header_and_names_its_tenant() -> None:
    assert access({"authorization": f"Bearer {ACME}"}) == Access(tenant="acme", admin=False)
    assert access({"authorization": f"Token {ACME}"}) == Access(tenant="acme", admin=False)
    assert access({"x-mnemo-api-key": ADMIN}) == Access(tenant=None, admin=True)
    assert status({}) == status({"authorization": "Bearer wrong-key-0123456789"}) == 401
    assert status({"authorization": f"Basic {ACME}"}) == 401


def test_on_the_chat_endpoint_authorization_is_the_upstream_key_and_never_a_mnemo_key() -> None:
    assert status({"authorization": f"Bearer {ACME}"}, "/v1/chat/completions") == 401
    both = {"authorization": "Bearer sk-upstream", "x-mnemo-api-key": ACME}
    assert access(both, "/v1/chat/completions").tenant == "acme"


def test_only_the_admin_picks_a_tenant_with_the_header() -> None:
    assert access({"x-mnemo-api-key": ACME, "x-mnemo-tenant": "globex"}).tenant == "acme"
    assert access({"x-mnemo-api-key": ADMIN, "x-mnemo-tenant": "globex"}) == Access(tenant="globex", admin=True)
    assert status({"x-mnemo-api-key": ADMIN, "x-mnemo-tenant": "a/b"}) == 400


def test_without_keys_everyone_is_admin() -> None:
    assert access({}, auth=AuthSettings()) == Access(tenant=None, admin=True)


def test_tenant_user_ids_are_namespaced_and_shown_without_the_namespace() -> None:
    acme, admin = Access(tenant="acme", admin=False), Access(tenant=None, admin=True)
    assert acme.user("alice") == "acme/alice" and acme.public_user("acme/alice") == "alice"
    assert acme.sees("acme/alice") and not acme.sees("globex/alice") and not acme.sees("alice")
    assert admin.sees("globex/alice") and admin.public_user("globex/alice") == "globex/alice"
    context = MemoryContext("req_1", Scope(user_id="alice", agent_id="a"), "on", None)
    assert scoped_context(context, acme).scope == Scope(user_id="acme/alice", agent_id="a")
    assert scoped_context(context, admin) is context


def test_keys_come_from_the_environment_and_must_be_long_and_distinct() -> None:
    env = {"MNEMO_AUTH__ADMIN_KEYS": f'["{ADMIN}"]', "MNEMO_AUTH__TENANTS": f'[{{"id": "acme", "keys": ["{ACME}"]}}]'}
    auth = load_settings(environ=env).auth
    assert auth.configured and auth.tenants[0].id == "acme" and ADMIN not in repr(auth)
    with pytest.raises(ConfigError):
        load_settings(environ={"MNEMO_AUTH__ADMIN_KEYS": '["short"]'})
    with pytest.raises(ConfigError):
        load_settings(
            environ={"MNEMO_AUTH__ADMIN_KEYS": f'["{ACME}"]', "MNEMO_AUTH__TENANTS": env["MNEMO_AUTH__TENANTS"]}
        )
    with pytest.raises(ConfigError):
        load_settings(environ={"MNEMO_AUTH__TENANTS": '[{"id": "a/b", "keys": []}]'})


def test_an_open_gateway_refuses_a_non_loopback_host_unless_allowed(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="gateway.access"):
        check_exposure(Settings())
    assert "open" in caplog.text and "127.0.0.1" in caplog.text
    with pytest.raises(ConfigError, match="allow_open_network"):
        check_exposure(Settings.model_validate({"server": {"host": "0.0.0.0"}}))
    check_exposure(Settings.model_validate({"server": {"host": "0.0.0.0", "allow_open_network": True}}))
    check_exposure(Settings.model_validate({"server": {"host": "0.0.0.0"}, "auth": {"admin_keys": [ADMIN]}}))
    check_exposure(Settings.model_validate({"server": {"host": "localhost"}}))
