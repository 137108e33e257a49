"""The ceiling: a bare aiohttp + uvloop app answering fixed bytes (the same as a cached page)."""

from __future__ import annotations

import argparse
from pathlib import Path

import uvloop
from aiohttp import web


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--path", default="/api/v2/coupons")
    parser.add_argument("--body", type=Path, required=True)
    parser.add_argument("--any-path", action="store_true",
                        help="answer GET and POST on every path, reading the body first (the "
                             "ceiling of the realistic mix: bench/realistic.py)")
    args = parser.parse_args()
    body = args.body.read_bytes()

    async def handler(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(body=body, content_type="application/json")

    serve(args.port, "/{tail:.*}" if args.any_path else args.path, handler,
          post=args.any_path)


def serve(port: int, path: str, handler, *contexts, post: bool = False) -> None:
    """A ceiling app: `handler` on `path` (GET, and POST with `post`), `/readyz`, uvloop, no
    access log."""

    async def healthz(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.cleanup_ctx.extend(contexts)
    app.router.add_get("/readyz", healthz)
    app.router.add_get(path, handler)
    if post:
        app.router.add_post(path, handler)
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None,
                loop=uvloop.new_event_loop())


if __name__ == "__main__":
    main()
