"""The floor: a bare aiohttp pass-through proxy (no auth, no accounting, no parsing).

Run: ``python -m bench.bare_proxy --port 9200 --upstream http://127.0.0.1:9100``.
"""

from __future__ import annotations

import argparse

import aiohttp
import uvloop
from aiohttp import web


def make_app(upstream: str) -> web.Application:
    app = web.Application()

    async def on_startup(app: web.Application) -> None:
        app["session"] = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))

    async def on_cleanup(app: web.Application) -> None:
        await app["session"].close()

    async def forward(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        session: aiohttp.ClientSession = request.app["session"]
        async with session.post(
            upstream + request.path,
            data=body,
            headers={"content-type": "application/json"},
        ) as upstream_response:
            content_type = upstream_response.headers.get("content-type", "application/json")
            if content_type.startswith("text/event-stream"):
                response = web.StreamResponse(headers={"content-type": content_type})
                await response.prepare(request)
                async for piece in upstream_response.content.iter_any():
                    await response.write(piece)
                await response.write_eof()
                return response
            data = await upstream_response.read()
            return web.Response(
                body=data, status=upstream_response.status, content_type="application/json"
            )

    app.router.add_post("/v1/chat/completions", forward)
    app.router.add_post("/v1/messages", forward)
    app.router.add_post("/v1/responses", forward)
    app.on_startup.append(on_startup)
    app.on_cleanup.append(on_cleanup)
    return app


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=9200)
    parser.add_argument("--upstream", default="http://127.0.0.1:9100")
    args = parser.parse_args()
    uvloop.install()
    web.run_app(
        make_app(args.upstream), host="127.0.0.1", port=args.port, access_log=None, print=None
    )


if __name__ == "__main__":
    main()
