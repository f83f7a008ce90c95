"""Which event loop the mnemo processes run on (mnemo_cli.run.loop_factory)."""

from __future__ import annotations

import asyncio
import sys

import pytest
import uvloop

from mnemo.config import Settings
from mnemo.errors import ConfigError
from mnemo_cli.run import loop_factory


def test_auto_and_uvloop_run_on_uvloop_and_asyncio_on_the_default_loop() -> None:
    assert Settings().event_loop == "auto"
    for choice in ("auto", "uvloop"):
        factory = loop_factory(choice)
        assert factory is not None
        with asyncio.Runner(loop_factory=factory) as runner:
            assert isinstance(runner.get_loop(), uvloop.Loop)
    assert loop_factory("asyncio") is None


def test_without_uvloop_auto_falls_back_and_an_explicit_uvloop_is_a_config_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "uvloop", None)  # makes `import uvloop` raise ImportError
    assert loop_factory("auto") is None
    with pytest.raises(ConfigError, match="uvloop is not installed"):
        loop_factory("uvloop")
