"""`GET /`: a small HTML page that links every endpoint, as blackbox_exporter's does."""

from __future__ import annotations

import re
from urllib.parse import urljoin

import aiohttp

from tests.e2e.conftest import Start


async def test_index_links_every_endpoint_and_each_link_answers(start: Start) -> None:
    c = await start(replicas=1, backend="inprocess")
    await c.until(lambda s: s.state.rounds >= 1, within=20)
    async with aiohttp.ClientSession() as http:
        async with http.get(c.url + "/") as resp:
            assert resp.status == 200
            assert resp.headers["Content-Type"].startswith("text/html")
            page = await resp.text()
        links = re.findall(r'<a href="([^"]+)">', page)
        targets = [urljoin(c.url + "/", link) for link in links]
        assert sorted(t.removeprefix(c.url) for t in targets) == [
            "/healthz", "/metrics", "/readyz", "/status", "/vantage"]
        for target in targets:
            async with http.get(target) as resp:
                assert resp.status == 200, target
