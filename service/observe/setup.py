"""The request recorder of the app (service/observe/recorder.py), with its flush ticker."""

from __future__ import annotations

from aiohttp import web

from service.keys import recorder_key, settings_key
from service.observe.recorder import RequestRecorder, member_hash_key
from service.runtime.tasks import setup_ticker


def setup_recorder(app: web.Application) -> RequestRecorder:
    """The app's recorder, flushed every OBSERVE_FLUSH_SECONDS and once more after every other
    cleanup context has closed (the requests of the drain included)."""
    settings = app[settings_key]
    recorder = RequestRecorder(member_hash_key(settings.auth_jwt_secret))
    app[recorder_key] = recorder
    setup_ticker(app, "request-recorder", settings.observe_flush_seconds, recorder.flush,
                 last=recorder.flush)
    return recorder
