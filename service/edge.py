"""The one middleware every request passes: it names the request (X-Request-ID), bounds it
(REQUEST_TIMEOUT_SECONDS), turns every failure into the contract's envelope, sets the headers
every response carries, and records the request (service/observe.py).

One layer, not three, and no per-request timer: on a hot hit the whole service spends about as
much as aiohttp itself, and `asyncio.timeout` alone cost 8 µs a request (a timer handle pushed
on the loop's heap and cancelled). The bound is kept by `Deadlines` instead: a table of the
requests in flight and one tick a second that cancels those past their deadline, so a request
may run up to a second longer than the bound. It is a safety net behind the tighter bounds on
each dependency (README "Bounds").
"""

from __future__ import annotations

import asyncio
import time

from aiohttp import web

from service.errors import answer_for, request_id_of, unavailable
from service.keys import principal_key, request_id_key
from service.observe import CANCELLED, RequestRecorder, route_of

SERVER_NAME = "coupons"
TICK_SECONDS = 1.0


class Deadlines:
    """Requests in flight (their tasks) and when each must be over."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._due: dict[asyncio.Task, tuple[float, int]] = {}
        self._expired: set[asyncio.Task] = set()

    def enter(self, task: asyncio.Task, now: float) -> None:
        # cancelling(): a cancellation already pending for this task is not ours to swallow.
        self._due[task] = (now + self.seconds, task.cancelling())

    def leave(self, task: asyncio.Task) -> None:
        self._due.pop(task, None)
        self._expired.discard(task)

    def timed_out(self, task: asyncio.Task) -> bool:
        """Called on CancelledError: whether it is the deadline's own cancellation (then
        withdrawn, as asyncio.timeout does) rather than the client's or a shutdown's."""
        if task not in self._expired:
            return False
        self._expired.discard(task)
        _, cancelling = self._due.get(task, (0.0, 0))
        return task.uncancel() <= cancelling

    def expire(self, now: float) -> int:
        overdue = [task for task, (due, _) in self._due.items()
                   if due <= now and task not in self._expired]
        for task in overdue:
            self._expired.add(task)
            task.cancel()
        return len(overdue)


def edge_middleware_for(recorder: RequestRecorder, deadlines: Deadlines):
    @web.middleware
    async def edge_middleware(request: web.Request, handler) -> web.StreamResponse:
        start = time.monotonic()
        rid = request_id_of(request.headers.get("X-Request-ID"))
        request[request_id_key] = rid
        task = asyncio.current_task()
        assert task is not None
        deadlines.enter(task, start)
        recorder.in_flight += 1
        status = CANCELLED
        response: web.StreamResponse | None = None
        try:
            try:
                response = await handler(request)
            except web.HTTPException as exc:
                if exc.status < 400:
                    status = exc.status  # a redirect: aiohttp answers it
                    raise
                response = answer_for(exc, rid)
            except asyncio.CancelledError:
                if not deadlines.timed_out(task):
                    raise  # the client went away, or the shutdown grace ran out: 499
                response = unavailable()
            except Exception as exc:
                response = answer_for(exc, rid)
            status = response.status
            headers = response.headers
            headers["X-Request-ID"] = rid
            # No server version on the wire; JSON is never sniffed into something executable.
            # (A page's prebuilt headers carry these already: service/api.py.)
            if headers.get("Server") != SERVER_NAME:
                headers["Server"] = SERVER_NAME
                headers["X-Content-Type-Options"] = "nosniff"
            if "Cache-Control" not in headers:
                headers["Cache-Control"] = "private, no-cache"
            return response
        finally:
            deadlines.leave(task)
            recorder.in_flight -= 1
            principal = request.get(principal_key)
            recorder.add(time.time(), rid, request.method, route_of(request), status,
                         time.monotonic() - start,
                         response.headers.get("X-Cache") if response is not None else None,
                         principal.uniacid if principal is not None else None,
                         principal.member_id if principal is not None else None)

    return edge_middleware
