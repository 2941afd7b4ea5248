"""A naive reverse proxy on aiohttp, the baseline of the data-plane issue: `python -m loadtest.naive_aiohttp_proxy
--port N --backend http://127.0.0.1:M`. One ClientSession (keep-alive to the backend), the whole body read
then returned; no routing, no checks. For loadtest (the `small` and `16k` scenarios) only.
"""

from __future__ import annotations

import argparse

import aiohttp
from aiohttp import web

HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "content-encoding"}


def make_app(backend: str) -> web.Application:
    app = web.Application()

    async def startup(app: web.Application) -> None:
        app["session"] = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))

    async def cleanup(app: web.Application) -> None:
        await app["session"].close()

    async def proxy(request: web.Request) -> web.Response:
        async with app["session"].request(request.method, backend + request.path_qs,
                                          data=await request.read()) as upstream:
            body = await upstream.read()
            headers = {k: v for k, v in upstream.headers.items() if k.lower() not in HOP_BY_HOP}
            return web.Response(status=upstream.status, body=body, headers=headers)

    app.on_startup.append(startup)
    app.on_cleanup.append(cleanup)
    app.router.add_route("*", "/{tail:.*}", proxy)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--backend", required=True)
    args = parser.parse_args()
    web.run_app(make_app(args.backend), host="127.0.0.1", port=args.port, print=None, access_log=None)


if __name__ == "__main__":
    main()
