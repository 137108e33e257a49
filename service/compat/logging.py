"""The one module that writes past the logging module's records: straight to the stream of the
handler `service.observe.logs.configure` installed.

The request recorder (service/observe/recorder.py) writes a batch of request lines in one call
instead of a LogRecord, a formatting and a flush per line (13 µs of a 40 µs hit). That is only
right while nothing else would have seen those records: `json_sink` gives the handler when the
access logger's INFO records would reach it and only it, formatted as JSON, and None for any
other set-up (text logs, pytest's capture, an embedding application's handlers), which then gets
the records through logging as usual.
"""

from __future__ import annotations

import logging

_installed: logging.StreamHandler | None = None


def install(handler: logging.StreamHandler) -> None:
    """The root handler the service configured (the only one `json_sink` may write to)."""
    global _installed
    _installed = handler


def json_sink(logger: logging.Logger,
              formatter: type[logging.Formatter]) -> logging.StreamHandler | None:
    """The installed handler, if `logger`'s INFO records reach it alone, formatted by
    `formatter`; else None."""
    handler = _installed
    if (handler is None or not isinstance(handler.formatter, formatter)
            or logging.getLogger().handlers != [handler] or not logger.propagate
            or logger.handlers or logger.filters or not logger.isEnabledFor(logging.INFO)
            or handler.level > logging.INFO):
        return None
    return handler


def write(handler: logging.StreamHandler, text: str) -> None:
    """Lines written at once, under the handler's lock, as `StreamHandler.emit` writes one."""
    handler.acquire()
    try:
        handler.stream.write(text)
        handler.flush()
    except Exception:  # as logging does: a broken stream must not break the service
        handler.handleError(logging.makeLogRecord({"msg": "request lines"}))
    finally:
        handler.release()
