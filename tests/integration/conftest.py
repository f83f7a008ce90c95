"""Fixtures shared by the gateway integration modules."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.probes import Gateways
from tests.support.servers import ServerThread
from tests.support.upstream import ScriptedUpstream


@pytest.fixture(scope="module")
def gateways(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    upstream_server: tuple[ScriptedUpstream, ServerThread],
) -> Iterator[Gateways]:
    """One Mnemo per test module, restarted only when a test asks for other settings."""
    upstream, server = upstream_server
    directory = tmp_path_factory.mktemp(request.module.__name__.rsplit(".", 1)[-1])
    with Gateways(directory, upstream, server.url + "/v1") as started:
        yield started
