"""The retention policy: which TTL applies to a memory, and an asked expiry never past it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from mnemo.config import RetentionSettings
from mnemo.durations import parse_duration
from mnemo.models import Scope
from mnemo.retention import RetentionPolicy

T = datetime(2025, 1, 1, tzinfo=UTC)
USER, AGENT, SESSION = Scope(user_id="u"), Scope(user_id="u", agent_id="a"), Scope(user_id="u", session_id="s")


def test_the_ttl_follows_the_scope_and_the_first_matching_metadata_rule() -> None:
    policy = RetentionPolicy(
        RetentionSettings(
            session_ttl="1d",
            agent_ttl="30d",
            user_ttl="365d",
            metadata_rules=[
                {"key": "category", "value": "health", "ttl": "7d"},  # type: ignore[list-item]
                {"key": "pinned", "ttl": None},  # type: ignore[list-item]
            ],
        )
    )
    assert policy.expires_at(SESSION, {}, T) == T + timedelta(days=1)
    assert policy.expires_at(AGENT, {}, T) == T + timedelta(days=30)
    assert policy.expires_at(USER, {}, T) == T + timedelta(days=365)
    assert policy.expires_at(SESSION, {"category": "health"}, T) == T + timedelta(days=7)
    assert policy.expires_at(USER, {"category": "food"}, T) == T + timedelta(days=365)
    assert policy.expires_at(SESSION, {"pinned": True}, T) is None  # a rule may keep for good


def test_an_asked_expiry_may_shorten_the_policy_never_lengthen_it() -> None:
    policy = RetentionPolicy(RetentionSettings(user_ttl="30d"))
    assert policy.expires_at(USER, {}, T, T + timedelta(days=2)) == T + timedelta(days=2)
    assert policy.expires_at(USER, {}, T, T + timedelta(days=90)) == T + timedelta(days=30)
    assert RetentionPolicy().expires_at(USER, {}, T, T + timedelta(days=90)) == T + timedelta(days=90)
    assert RetentionPolicy().expires_at(USER, {}, T) is None


def test_durations_read_as_people_write_them() -> None:
    assert parse_duration("30d") == timedelta(days=30)
    assert parse_duration(" 12h") == timedelta(hours=12)
    assert parse_duration("90m") == timedelta(minutes=90)
    assert parse_duration("2w") == timedelta(weeks=2)
    assert parse_duration("45") == timedelta(seconds=45)
    for bad in ("soon", "0d", "-1d", "1y", ""):
        with pytest.raises(ValueError, match="duration"):
            parse_duration(bad)


def test_a_bad_policy_is_a_config_error() -> None:
    with pytest.raises(ValueError, match="retention.session_ttl"):
        RetentionSettings(session_ttl="forever")
    with pytest.raises(ValueError, match="sweep_interval_s must divide 60"):
        RetentionSettings(sweep_interval_s=7)
    assert RetentionSettings(sweep_interval_s=600).sweep_interval_s == 600
