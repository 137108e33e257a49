"""Logging: one JSON object per line (or plain text for a terminal), set up once per process.

Every record may carry structured fields (`extra={"fields": {...}}`); the request log line of
service/observe.py and the settings line at start use them. Nothing here ever sees a token:
callers pass only what may be logged.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import time
from typing import Any

import orjson

from service.settings import Settings


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(
                timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
            "pid": record.process,
        }
        rid = getattr(record, "request_id", None)
        if rid is not None:
            out["request_id"] = rid
        fields = getattr(record, "fields", None)
        if fields:
            out.update(fields)
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        # default=str: a stray non-JSON value (a Path, a Decimal) must not lose the line.
        return orjson.dumps(out, default=str).decode()


class TextFormatter(logging.Formatter):
    """For a terminal (LOG_FORMAT=text, `make run`): short lines, the time of day first."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-5s %(name)s: %(message)s", "%H:%M:%S")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        fields = getattr(record, "fields", None)
        if fields:
            line += " " + " ".join(f"{k}={v}" for k, v in fields.items())
        return line


# The handler `configure` installed: request lines in JSON go straight to its stream.
_handler: logging.StreamHandler | None = None


class _Timestamps:
    """`JsonFormatter`'s "ts", formatted once per second: datetime's isoformat was 3.6 µs."""

    def __init__(self) -> None:
        self._second = -1
        self._prefix = ""

    def __call__(self, wall: float) -> str:
        second = int(wall)
        return f"{self.second(second)}.{int((wall - second) * 1000):03d}+00:00"

    def second(self, second: int) -> str:
        """The part before the milliseconds."""
        if second != self._second:
            self._second = second
            self._prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        return self._prefix


timestamp = _Timestamps()


def json_sink(logger: logging.Logger) -> logging.StreamHandler | None:
    """The handler `configure` installed, when `logger`'s INFO records would reach it and only
    it, formatted as JSON: then lines may be written to it directly (service/observe.py).
    None for any other set-up (text, tests' capture, an embedding application's handlers),
    which gets the records through logging."""
    handler = _handler
    if (handler is None or not isinstance(handler.formatter, JsonFormatter)
            or logging.getLogger().handlers != [handler] or not logger.propagate
            or logger.handlers or logger.filters or not logger.isEnabledFor(logging.INFO)
            or handler.level > logging.INFO):
        return None
    return handler


def write(handler: logging.StreamHandler, text: str) -> None:
    """Lines written at once, under the handler's lock."""
    handler.acquire()
    try:
        handler.stream.write(text)
        handler.flush()
    except Exception:  # as logging does: a broken stream must not break the service
        handler.handleError(logging.makeLogRecord({"msg": "request lines"}))
    finally:
        handler.release()


def configure(settings: Settings) -> None:
    """Replace the root handlers: stderr, one record per line, in the configured format."""
    global _handler
    handler = logging.StreamHandler()
    _handler = handler
    handler.setFormatter(JsonFormatter() if settings.log_format == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(settings.log_level.upper())


def log_settings(settings: Settings, level: int = logging.INFO) -> None:
    """The effective settings, once per start, secrets and URL passwords masked."""
    logging.getLogger("service").log(
        level, "effective settings", extra={"fields": {"settings": settings.masked(),
                                                       "pid": os.getpid()}})
