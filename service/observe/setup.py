"""The request recorder of the app (service/observe/recorder.py), with its flush ticker, and the
event loop's lag monitor (service/runtime/lag.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web

from service.keys import lag_key, recorder_key, settings_key
from service.observe.recorder import RequestRecorder, member_hash_key
from service.runtime.lag import LagMonitor
from service.runtime.tasks import setup_ticker


def setup_recorder(app: web.Application) -> RequestRecorder:
    """The app's recorder, flushed every OBSERVE_FLUSH_SECONDS and once more after every other
    cleanup context has closed (the requests of the drain included)."""
    settings = app[settings_key]
    recorder = RequestRecorder(member_hash_key(settings.auth_jwt_secret), settings.memo_entries)
    app[recorder_key] = recorder
    setup_ticker(app, "request-recorder", settings.observe_flush_seconds, recorder.flush,
                 last=recorder.flush)
    return recorder


def setup_lag(app: web.Application) -> LagMonitor:
    """The loop's lateness, sampled for the whole life of the app."""
    monitor = LagMonitor()
    app[lag_key] = monitor

    async def lag_ctx(app: web.Application) -> AsyncIterator[None]:
        async with monitor.running():
            yield

    app.cleanup_ctx.append(lag_ctx)
    return monitor
