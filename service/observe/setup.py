"""The request recorder of the app (service/observe/recorder.py), with its flush ticker, the
event loop's lag monitor (service/runtime/lag.py) and the garbage collector's pauses."""

from __future__ import annotations

import gc
import time
from collections.abc import AsyncIterator

from aiohttp import web

from service.keys import lag_key, recorder_key, settings_key
from service.observe import metrics
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


def setup_gc_pauses(app: web.Application) -> None:
    """Each collection of the cyclic garbage collector timed (coupons_gc_pause_seconds): a full
    one walks every live cache entry, and holds the loop meanwhile."""
    started: list[float] = []

    def timed(phase: str, info: dict) -> None:
        if phase == "start":
            started[:] = [time.perf_counter()]
        elif started:
            metrics.GC_PAUSE.labels(str(info["generation"])).observe(
                time.perf_counter() - started.pop())

    async def gc_ctx(app: web.Application) -> AsyncIterator[None]:
        gc.callbacks.append(timed)
        try:
            yield
        finally:
            gc.callbacks.remove(timed)

    app.cleanup_ctx.append(gc_ctx)


def setup_lag(app: web.Application) -> LagMonitor:
    """The loop's lateness, sampled for the whole life of the app."""
    monitor = LagMonitor()
    app[lag_key] = monitor

    async def lag_ctx(app: web.Application) -> AsyncIterator[None]:
        async with monitor.running():
            yield

    app.cleanup_ctx.append(lag_ctx)
    return monitor
