from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from mnemo.logs import HANDLER_NAME, JsonFormatter, RequestIdFilter, configure_logging, request_id_var


@pytest.fixture
def captured() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(RequestIdFilter())
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("mnemo.test_logs")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield logger, stream
    logger.removeHandler(handler)


def test_json_lines_carry_the_request_id_of_the_current_context(captured: tuple[logging.Logger, io.StringIO]) -> None:
    logger, stream = captured
    logger.info("outside %s", "any request")
    token = request_id_var.set("req_abc")
    try:
        logger.warning("inside %d", 1)
    finally:
        request_id_var.reset(token)
    outside, inside = (json.loads(line) for line in stream.getvalue().splitlines())
    assert outside["message"] == "outside any request" and "request_id" not in outside
    assert inside == {**inside, "level": "WARNING", "logger": "mnemo.test_logs", "message": "inside 1"}
    assert inside["request_id"] == "req_abc" and inside["time"].endswith("+00:00")


def test_exceptions_are_one_json_line(captured: tuple[logging.Logger, io.StringIO]) -> None:
    logger, stream = captured
    try:
        raise ValueError("boom")
    except ValueError:
        logger.exception("failed")
    (line,) = stream.getvalue().splitlines()
    assert "ValueError: boom" in json.loads(line)["exception"]


def test_configure_logging_replaces_only_its_own_handler() -> None:
    root = logging.getLogger()
    level, before = root.level, list(root.handlers)
    try:
        configure_logging("WARNING", "json")
        configure_logging("INFO", "text")
        ours = [h for h in root.handlers if h.get_name() == HANDLER_NAME]
        assert len(ours) == 1 and not isinstance(ours[0].formatter, JsonFormatter)
        assert [h for h in root.handlers if h.get_name() != HANDLER_NAME] == before
        assert logging.getLogger("arq.worker").level == logging.WARNING
    finally:
        for handler in [h for h in root.handlers if h.get_name() == HANDLER_NAME]:
            root.removeHandler(handler)
        root.setLevel(level)
