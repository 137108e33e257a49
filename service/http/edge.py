"""The edge every request passes: it names the request (X-Request-ID), bounds it
(REQUEST_TIMEOUT_SECONDS), turns every failure into the contract's envelope, sets the headers
every response carries, and records the request (service/observe/recorder.py).

`Edge.route` wraps each route's handler at registration, and `Edge.close` ends the table with a
405 route per path and a catch-all 404, so that every request, matched or not, gets the same
edge; tests/http/test_edge.py checks that no route escapes it. It is not an aiohttp middleware
because of what one costs: aiohttp runs any middleware through a cached chain of partials plus
its own `current_app` layer, and on a local hit that machinery with the middleware's coroutine
was a tenth of the whole request (docs/performance.md).

A route may also have a `fast` path: a synchronous function that answers without waiting on
anything (a process-local hit) or returns None. A request that never waits cannot overrun its
bound, so the fast path skips the deadline table. No per-request timer either: `asyncio.timeout`
alone cost 8 µs a request (a timer handle pushed on the loop's heap and cancelled). The bound is
kept by `Deadlines`: a table of the requests in flight and one tick a second that cancels those
past their deadline, so a request may run up to a second longer than the bound. It is a safety
net behind the tighter bounds on each dependency (docs/security.md, "Bounds").
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from aiohttp import web

from service.auth.tokens import Principal
from service.hotpath.prebuilt import COMPLETE, outcome_of
from service.http.errors import answer_for, log_failure, request_id_of, styled, unavailable
from service.http.headers import CACHE_CONTROL, COMMON, PRIVATE, X_REQUEST_ID
from service.keys import principal_key, request_id_key, settings_key
from service.observe import metrics
from service.observe.recorder import CANCELLED, UNMATCHED, RequestRecorder
from service.runtime.tasks import setup_ticker

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


def setup_deadlines(app: web.Application) -> Deadlines:
    """The table of requests in flight, and its tick (REQUEST_TIMEOUT_SECONDS)."""
    deadlines = Deadlines(app[settings_key].request_timeout_seconds)
    setup_ticker(app, "request-deadlines", TICK_SECONDS,
                 lambda: deadlines.expire(time.monotonic()))
    return deadlines


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


async def _shed(request: web.Request) -> web.StreamResponse:
    """The answer past the admission bound: the 503 envelope with Retry-After."""
    return unavailable()
# Given the request and its id: a complete response (the id in it), who it was for and its cache
# outcome (the request log line's tenant, member and cache), or None.
Fast = Callable[[web.Request, str], tuple[web.StreamResponse, Principal, str] | None]


class Edge:
    """Routes registered through it, each wrapped in the edge."""

    def __init__(self, recorder: RequestRecorder, deadlines: Deadlines, *,
                 error_style: str = "http", max_body_bytes: int = 65536,
                 max_in_flight: int = 0) -> None:
        self.recorder = recorder
        # MAX_REQUESTS_IN_FLIGHT (0: none): the admission bound of the routes that ask for it.
        self.max_in_flight = max_in_flight or None
        self.admitted = 0  # their requests in flight now
        self.deadlines = deadlines
        self.error_style = error_style  # ERROR_STYLE (service/http/errors.py: styled)
        self.max_body_bytes = max_body_bytes  # the 413's message names it
        self._methods: dict[str, set[str]] = {}
        self.closed = False

    def route(self, router: web.UrlDispatcher, method: str, path: str, handler: Handler, *,
              fast: Fast | None = None, admit: bool = False) -> None:
        """`admit`: the route's requests that wait (not its fast path's, which never do) count
        against MAX_REQUESTS_IN_FLIGHT."""
        if self.closed:
            raise RuntimeError("a route added after Edge.close would never be reached")
        allowed = self._methods.setdefault(path, set())
        wrapped = self.wrap(handler, path, fast, admit)
        if method == "GET":
            router.add_get(path, wrapped)  # and HEAD
            allowed.update(("GET", "HEAD"))
        else:
            router.add_route(method, path, wrapped)
            allowed.add(method)

    def close(self, router: web.UrlDispatcher) -> None:
        """After the last route: any other method on a known path is a 405 naming the allowed
        ones, any other path a 404. aiohttp would answer both itself, in plain text."""
        for path, methods in self._methods.items():
            allow = ",".join(sorted(methods))

            async def not_allowed(request: web.Request, allow: str = allow) -> web.Response:
                raise web.HTTPMethodNotAllowed(request.method, allow.split(","))

            # A resource of its own, after the path's first: aiohttp tries both in turn.
            router.add_route("*", path, self.wrap(not_allowed, path))

        async def not_found(request: web.Request) -> web.Response:
            raise web.HTTPNotFound()

        # One label for every unmatched path: a scanner must not create a series per path.
        router.add_route("*", "/{tail:.*}", self.wrap(not_found, UNMATCHED))
        self.closed = True

    def wrap(self, handler: Handler, route: str, fast: Fast | None = None,
             admit: bool = False) -> Handler:
        record = self.recorder.add
        general = self._admitted if admit else self._general

        async def edge(request: web.Request) -> web.StreamResponse:
            start = time.monotonic()
            rid = request_id_of(request.headers.get(X_REQUEST_ID))
            if fast is not None:
                try:
                    answered = fast(request, rid)
                except Exception as exc:  # a bug: logged, and the handler answers instead
                    log_failure(exc, rid)
                    answered = None
                if answered is not None:
                    response, principal, cache = answered
                    record(time.time(), rid, request.method, route, response.status,
                           time.monotonic() - start, cache, principal.uniacid,
                           principal.member_id)
                    return response
            return await general(request, handler, route, rid, start)

        edge.edge_route = route  # type: ignore[attr-defined]  # tests: nothing escapes the edge
        return edge

    async def _admitted(self, request: web.Request, handler: Handler, route: str, rid: str,
                        start: float) -> web.StreamResponse:
        """`_general` within the admission bound. Past it the request is shed at once: waiting
        in line behind the ones in flight would only add its wait to everyone's, and a late
        loop makes each dependency look slow (service/runtime/lag.py); a 503 with Retry-After
        costs little and tells the mall's page to try again."""
        if self.max_in_flight is not None and self.admitted >= self.max_in_flight:
            metrics.SHED.labels("in_flight").inc()
            return await self._general(request, _shed, route, rid, start)
        self.admitted += 1
        try:
            return await self._general(request, handler, route, rid, start)
        finally:
            self.admitted -= 1

    async def _general(self, request: web.Request, handler: Handler, route: str, rid: str,
                       start: float) -> web.StreamResponse:
        request[request_id_key] = rid
        status = CANCELLED
        response: web.StreamResponse | None = None
        try:
            response = await self._answer(request, handler, rid, start)
            # The real outcome, for the log line and the metrics, before ERROR_STYLE restyles it.
            status = response.status
            if not isinstance(response, COMPLETE):  # a page's answer has them all already
                styled(response, self.error_style)
                headers = response.headers
                headers[X_REQUEST_ID] = rid
                headers.update(COMMON)
                if CACHE_CONTROL not in headers:
                    headers[CACHE_CONTROL] = PRIVATE
            return response
        except web.HTTPException as exc:
            status = exc.status  # a redirect (below 400): aiohttp answers it
            raise
        finally:
            principal = request.get(principal_key)
            self.recorder.add(time.time(), rid, request.method, route, status,
                              time.monotonic() - start,
                              outcome_of(response) if response is not None else None,
                              principal.uniacid if principal is not None else None,
                              principal.member_id if principal is not None else None)

    async def _answer(self, request: web.Request, handler: Handler, rid: str,
                      start: float) -> web.StreamResponse:
        """The handler's response, or the envelope of its failure, within the request bound."""
        deadlines = self.deadlines
        task = asyncio.current_task()
        assert task is not None
        deadlines.enter(task, start)
        self.recorder.in_flight += 1
        try:
            return await handler(request)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            return answer_for(exc, rid, self.max_body_bytes)
        except asyncio.CancelledError:
            if not deadlines.timed_out(task):
                raise  # the client went away, or the shutdown grace ran out: 499
            return unavailable()
        except Exception as exc:
            return answer_for(exc, rid, self.max_body_bytes)
        finally:
            deadlines.leave(task)
            self.recorder.in_flight -= 1
