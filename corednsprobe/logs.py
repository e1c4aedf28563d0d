"""Structured logging set-up: JSON lines in a cluster, a readable console on a TTY.

Owns: structlog's configuration, and routing the standard library's logging
(aiohttp, asyncio, the Kubernetes client) through the same processors and
renderer, so that every record is one JSON line (a traceback inside it, in
``exception``), never plain text. Never does: decide what is logged.
Events are snake_case past-tense facts (``target_unhealthy``) with key-value
context; every event says which module logged it (``logger``).
"""

from __future__ import annotations

import logging
import sys
from typing import Any, TextIO

import structlog

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
           "error": logging.ERROR}

# The handler that carries standard-library records into structlog's renderer.
_handler: logging.Handler | None = None


class _NamedPrintLogger(structlog.PrintLogger):
    """A PrintLogger that knows the name it was asked for (``get(__name__)``)."""

    def __init__(self, file: TextIO, name: str) -> None:
        super().__init__(file)
        self.name = name


class _NamedPrintLoggerFactory:
    def __init__(self, file: TextIO) -> None:
        self._file = file

    def __call__(self, *args: Any) -> _NamedPrintLogger:
        return _NamedPrintLogger(self._file, str(args[0]) if args else "")


def _add_logger_name(logger: Any, method: str, event: Any) -> Any:
    name = getattr(logger, "name", "")
    if name:
        event.setdefault("logger", name)
    return event


class _ClosedTransportNoise(logging.Filter):
    """A peer's last bytes arriving on a TLS connection we already closed make uvloop log
    "Fatal error on SSL protocol … the handler is closed" (MagicStack/uvloop#506):
    a connection that went away, not an error. It becomes a debug line."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if record.name == "asyncio" and str(record.msg).startswith("Fatal error on SSL") \
                and isinstance(exc, RuntimeError) and "handler is closed" in str(exc):
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
            record.exc_info, record.exc_text = None, None
            return logging.getLogger().isEnabledFor(logging.DEBUG)
        return True


def configure(level: str = "info", fmt: str = "auto", stream: TextIO | None = None) -> None:
    """Configure structlog and the standard library's root logger once for the
    process; logs go to ``stream`` (stderr)."""
    global _handler
    out = stream if stream is not None else sys.stderr
    console = fmt == "console" or (fmt == "auto" and out.isatty())
    shared: list[structlog.typing.Processor] = [
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    rendering: list[structlog.typing.Processor]
    if console:
        rendering = [structlog.dev.ConsoleRenderer(colors=out.isatty())]
    else:
        rendering = [structlog.processors.format_exc_info, structlog.processors.JSONRenderer()]
    structlog.configure(
        processors=[structlog.contextvars.merge_contextvars, _add_logger_name, *shared,
                    *rendering],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        logger_factory=_NamedPrintLoggerFactory(out),
        cache_logger_on_first_use=False,
    )
    handler = logging.StreamHandler(out)
    handler.addFilter(_ClosedTransportNoise())
    handler.setFormatter(structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[structlog.stdlib.add_logger_name, *shared],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *rendering],
    ))
    root = logging.getLogger()
    if _handler is not None:
        root.removeHandler(_handler)
    root.addHandler(handler)
    # Other libraries' records from WARNING up (as Python shows them by default),
    # everything when debugging.
    root.setLevel(logging.DEBUG if level == "debug" else max(logging.WARNING, _LEVELS[level]))
    _handler = handler


def get(name: str) -> structlog.typing.FilteringBoundLogger:
    """The logger of module ``name``: its events carry ``logger=name``."""
    logger: structlog.typing.FilteringBoundLogger = structlog.get_logger(name)
    return logger
