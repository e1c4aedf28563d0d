"""The HTTP face of the service: /metrics, /healthz, /readyz, /status.

Owns: routes and response shapes. Never does: compute anything itself — it
renders what the ProberService and the Metrics already know.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web

from corednsprobe.metrics import CONTENT_TYPE

if TYPE_CHECKING:
    from corednsprobe.service.app import ProberService


def build_app(
    service: ProberService, extra_status: dict[str, Callable[[], Any]] | None = None
) -> web.Application:
    """``extra_status`` maps a /status key to a callable adding a section (remediation)."""
    app = web.Application()

    async def metrics(_req: web.Request) -> web.Response:
        body = service.metrics.render()
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})

    async def healthz(_req: web.Request) -> web.Response:
        if service.live():
            return web.Response(text="ok\n")
        return web.Response(status=503, text="rounds are not completing on time\n")

    async def readyz(_req: web.Request) -> web.Response:
        if service.ready():
            return web.Response(text="ok\n")
        return web.Response(status=503, text="waiting for the first list of targets\n")

    async def status(_req: web.Request) -> web.Response:
        doc = service.status()
        for key, section in (extra_status or {}).items():
            doc[key] = section()
        return web.Response(text=json.dumps(doc, indent=2) + "\n",
                            content_type="application/json")

    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/status", status)
    return app


class ListenError(Exception):
    """The HTTP server cannot listen where COREDNSPROBE_LISTEN says; the CLI exits 2."""


async def start(app: web.Application, host: str, port: int) -> tuple[web.AppRunner, int]:
    """Serve ``app``; returns the runner (to clean up) and the bound port."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
    except OSError as exc:
        await runner.cleanup()
        raise ListenError(
            f"cannot listen on {host}:{port}: {exc.strerror or exc}; choose another address "
            "with COREDNSPROBE_LISTEN (port 0 picks a free one)") from None
    return runner, int(runner.addresses[0][1])
