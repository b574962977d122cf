"""A bare aiohttp server answering every GET with a fixed page: the web side's ceiling.

Its own process on 127.0.0.1, port 0 (printed); the page is as large as the
gateway's ticket page measured in the same run, so both move the same bytes.

    python -m bench.web_ceiling BYTES
"""

from __future__ import annotations

import asyncio
import sys

from aiohttp import web


async def main(size: int) -> None:
    body = ("<p>" + "x" * 76 + "</p>\n") * (size // 84 + 1)
    page = body[:size]

    async def handler(request: web.Request) -> web.Response:
        return web.Response(text=page, content_type="text/html")

    app = web.Application()
    app.router.add_get("/{tail:.*}", handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    print(runner.addresses[0][1], flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1])))
