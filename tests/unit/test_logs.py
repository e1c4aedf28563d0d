"""Logging: every event names its module, and the standard library's records are JSON too."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest
import structlog

from corednsprobe import logs


@pytest.fixture
def stream() -> Iterator[io.StringIO]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    out = io.StringIO()
    logs.configure("info", "json", out)
    try:
        yield out
    finally:  # as before the test: structlog's defaults, the root logger's handlers
        structlog.reset_defaults()
        root.handlers[:] = handlers
        root.setLevel(level)


def _records(out: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in out.getvalue().splitlines()]


def test_a_module_logger_names_its_module(stream: io.StringIO) -> None:
    logs.get("corednsprobe.probe.engine").info("probe_sent", target="10.0.0.1:53")
    [record] = _records(stream)
    assert record["event"] == "probe_sent"
    assert record["logger"] == "corednsprobe.probe.engine"


def test_a_standard_library_traceback_is_one_json_line(stream: io.StringIO) -> None:
    try:
        raise ValueError("bad request line")
    except ValueError:
        logging.getLogger("aiohttp.server").exception("Error handling request from %s", "x")
    logging.getLogger("asyncio").info("below the libraries' level")
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1
    record = json.loads(lines[0])
    assert record["logger"] == "aiohttp.server" and record["level"] == "error"
    assert record["event"] == "Error handling request from x"
    assert "ValueError: bad request line" in str(record["exception"])


def _closed_transport_error(message: str = "the handler is closed") -> None:
    try:
        raise RuntimeError(f"unable to perform operation on <TCPTransport closed=True>; {message}")
    except RuntimeError:
        logging.getLogger("asyncio").error(
            "Fatal error on SSL protocol\nprotocol: <uvloop.loop.SSLProtocol>", exc_info=True)


def test_a_tls_peer_gone_after_close_is_no_error(stream: io.StringIO) -> None:
    _closed_transport_error()
    assert stream.getvalue() == ""  # a debug line, below the level in force
    _closed_transport_error("something else")  # any other fatal error still shows
    [record] = _records(stream)
    assert record["level"] == "error" and "something else" in str(record["exception"])
