"""A real Prometheus (Debian's ``prometheus``) on 127.0.0.1 for the tests.

It scrapes the given targets every second, evaluates the shipped rules every
second, keeps its TSDB in a temporary directory, and is stopped and its
directory removed on exit. Queries go through its HTTP API.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import socket
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from tests.monitoring import kit


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class Prometheus:
    url: str
    http: aiohttp.ClientSession

    async def get(self, path: str, **params: str) -> Any:
        async with self.http.get(self.url + path, params=params) as resp:
            body = await resp.json()
        if body.get("status") != "success":
            raise AssertionError(f"GET {path} {params}: {json.dumps(body)}")
        return body["data"]

    async def query(self, expr: str) -> list[Any]:
        data = await self.get("/api/v1/query", query=expr)
        result: list[Any] = data["result"]
        return result

    async def alerts(self) -> list[Any]:
        data = await self.get("/api/v1/alerts")
        alerts: list[Any] = data["alerts"]
        return alerts


@contextlib.asynccontextmanager
async def running(targets: list[str], job: str = "corednsprobe") -> AsyncIterator[Prometheus]:
    binary = shutil.which("prometheus")
    assert binary, "prometheus (Debian package prometheus) is not installed"
    work = Path(tempfile.mkdtemp(prefix="corednsprobe-prometheus-"))
    proc: asyncio.subprocess.Process | None = None
    try:
        config = work / "prometheus.yml"
        config.write_text(yaml.safe_dump({
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s",
                       "scrape_timeout": "900ms"},
            "rule_files": [str(kit.RULES)],
            "scrape_configs": [{"job_name": job, "static_configs": [{"targets": targets}]}],
        }))
        port = _free_port()
        proc = await asyncio.create_subprocess_exec(
            binary, f"--config.file={config}", f"--storage.tsdb.path={work / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn",
            stdout=asyncio.subprocess.DEVNULL, stderr=(work / "log").open("wb"))
        url = f"http://127.0.0.1:{port}"
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
            async with asyncio.timeout(30):
                while True:
                    if proc.returncode is not None:
                        raise AssertionError("prometheus exited: "
                                             + (work / "log").read_text()[-2000:])
                    with contextlib.suppress(aiohttp.ClientError):
                        async with http.get(url + "/-/ready") as resp:
                            if resp.status == 200:
                                break
                    await asyncio.sleep(0.2)
            yield Prometheus(url, http)
    finally:
        if proc is not None and proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 20)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        shutil.rmtree(work, ignore_errors=True)
