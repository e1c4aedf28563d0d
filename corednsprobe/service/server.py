"""The HTTP face of the service: /, /metrics, /healthz, /readyz, /status.

Owns: routes, response shapes and listening. Never does: compute anything
itself — it renders what the Metrics and the status page already know.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, Protocol

from aiohttp import web

from corednsprobe.metrics import CONTENT_TYPE, Metrics


class Page(Protocol):
    """What /healthz, /readyz and /status read (service.status.StatusPage)."""

    def live(self) -> bool: ...

    def ready(self) -> bool: ...

    def document(self) -> dict[str, Any]: ...


INDEX = """<!doctype html>
<html>
<head><meta charset="utf-8"><title>corednsprobe</title></head>
<body>
<h1>corednsprobe</h1>
<p>Probes CoreDNS over UDP, pod by pod and through its Service.</p>
<ul>
<li><a href="metrics">/metrics</a> &mdash; Prometheus metrics</li>
<li><a href="status">/status</a> &mdash; targets, verdicts, diagnosis and remediation (JSON)</li>
<li><a href="healthz">/healthz</a> &mdash; liveness: rounds complete on time</li>
<li><a href="readyz">/readyz</a> &mdash; readiness: the first list of targets arrived</li>
<li><a href="vantage">/vantage</a> &mdash; this replica's verdict on each pod (JSON)</li>
</ul>
</body>
</html>
"""


def build_app(metrics: Metrics, page: Page,
              vantage: Callable[[], dict[str, Any] | None] | None = None) -> web.Application:
    """``vantage`` gives the ``GET /vantage`` document (None: no verdict yet, 503)."""
    app = web.Application()

    async def index(_req: web.Request) -> web.Response:
        return web.Response(text=INDEX, content_type="text/html")

    async def metrics_(_req: web.Request) -> web.Response:
        return web.Response(body=metrics.render(), headers={"Content-Type": CONTENT_TYPE})

    async def healthz(_req: web.Request) -> web.Response:
        if page.live():
            return web.Response(text="ok\n")
        return web.Response(status=503, text="rounds are not completing on time\n")

    async def readyz(_req: web.Request) -> web.Response:
        if page.ready():
            return web.Response(text="ok\n")
        return web.Response(status=503, text="waiting for the first list of targets\n")

    async def status(_req: web.Request) -> web.Response:
        return web.Response(text=json.dumps(page.document(), indent=2) + "\n",
                            content_type="application/json")

    async def vantage_(_req: web.Request) -> web.Response:
        doc = vantage() if vantage is not None else None
        if doc is None:
            return web.Response(status=503, text="no verdict yet\n")
        return web.Response(text=json.dumps(doc, separators=(",", ":")),
                            content_type="application/json")

    app.router.add_get("/", index)
    app.router.add_get("/vantage", vantage_)
    app.router.add_get("/metrics", metrics_)
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
