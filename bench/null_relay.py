"""A do-nothing asyncio HTTP relay: the floor any Python relay pays here (bench/sidecar_overhead.py).

`python -m sloguard.bench.null_relay --port P --upstream URL` forwards every POST to the same path upstream
(body and content type unchanged, one pooled aiohttp session) and copies the response bytes back as they
arrive, with no parsing, no admission, no metrics. The sidecar-overhead benchmark runs it as a third path
beside "direct" and "sidecar", so its table separates what the sidecar's own work adds from what a
Python/aiohttp hop costs on a machine whose cores the engine and the load generator share.
"""

import argparse
import asyncio

import aiohttp
from aiohttp import web


def relay_app(upstream: str) -> web.Application:
    """An app that relays POSTs to `upstream` byte for byte."""
    session_key = web.AppKey("session", aiohttp.ClientSession)
    base = upstream.rstrip("/")

    async def open_session(app: web.Application) -> None:
        app[session_key] = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0), timeout=aiohttp.ClientTimeout(total=None)
        )

    async def close_session(app: web.Application) -> None:
        await app[session_key].close()

    async def relay(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        headers = {"Content-Type": request.headers.get("Content-Type", "application/json")}
        async with request.app[session_key].post(f"{base}{request.path}", data=body, headers=headers) as up:
            response = web.StreamResponse(
                status=up.status, headers={"Content-Type": up.headers.get("Content-Type", "")}
            )
            await response.prepare(request)
            async for data in up.content.iter_any():
                await response.write(data)
            await response.write_eof()
            return response

    async def health(_: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    app = web.Application()
    app.on_startup.append(open_session)
    app.on_cleanup.append(close_session)
    app.router.add_post("/{path:.*}", relay)
    app.router.add_get("/health", health)
    return app


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument(
        "--upstream", required=True, help="base URL of the engine, e.g. http://127.0.0.1:8000"
    )
    parser.add_argument("--host", default="127.0.0.1")
    args = parser.parse_args(argv)
    asyncio.run(_serve(relay_app(args.upstream), args.host, args.port))


async def _serve(app: web.Application, host: str, port: int) -> None:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    try:
        await asyncio.Event().wait()  # until SIGTERM ends the process
    finally:
        await runner.cleanup()


if __name__ == "__main__":
    main()
