"""Logging: one JSON object per line (or plain text for a terminal), set up once per process.

Every record may carry structured fields (`extra={"fields": {...}}`); the request log line of
service/observe/recorder.py and the settings line at start use them. Nothing here ever sees a token:
callers pass only what may be logged.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import time
from typing import Any

import orjson

from service.compat import logging as compat_logging
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


def configure(settings: Settings) -> None:
    """Replace the root handlers: stderr, one record per line, in the configured format."""
    handler = logging.StreamHandler()
    # Request lines in JSON may go straight to its stream (service/compat/logging.py).
    compat_logging.install(handler)
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
