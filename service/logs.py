"""Logging: one JSON object per line (or plain text for a terminal), set up once per process.

Every record may carry structured fields (`extra={"fields": {...}}`); the request log line of
service/observe.py and the settings line at start use them. Nothing here ever sees a token:
callers pass only what may be logged.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
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
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s[%(process)d] %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        fields = getattr(record, "fields", None)
        if fields:
            line += " " + " ".join(f"{k}={v}" for k, v in fields.items())
        return line


def configure(settings: Settings) -> None:
    """Replace the root handlers: stderr, one record per line, in the configured format."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if settings.log_format == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(settings.log_level.upper())


def log_settings(settings: Settings) -> None:
    """The effective settings, once per start, secrets and URL passwords masked."""
    logging.getLogger("service").info(
        "effective settings", extra={"fields": {"settings": settings.masked(),
                                                "pid": os.getpid()}})
