"""Fixtures for the Prober against real DNS servers: uvloop, servers, namespaces."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import uvloop

from tests.helpers import dnsservers, netns
from tests.helpers.dnsservers import RunningServer


def pytest_asyncio_loop_factories(config: Any, item: Any) -> Mapping[str, Callable[[], Any]]:
    """Integration tests run on uvloop, as the service does."""
    return {"uvloop": uvloop.new_event_loop}


def _need(*programs: str) -> None:
    missing = [p for p in programs if shutil.which(p) is None]
    if missing:
        pytest.skip(f"not installed: {', '.join(missing)}")


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("dns")


@pytest.fixture(scope="module")
def unbound(workdir: Path) -> Iterator[RunningServer]:
    """unbound on 127.0.0.1 (a free port) with the cluster.local test zone."""
    _need("unbound", "unbound-control")
    with dnsservers.unbound(workdir) as server:
        yield server


@pytest.fixture(scope="module")
def knot(workdir: Path) -> Iterator[RunningServer]:
    _need("knotd")
    with dnsservers.knot(workdir, ["127.0.0.1"], dnsservers.free_port()) as server:
        yield server


@pytest.fixture(scope="module")
def named_servfail(workdir: Path) -> Iterator[RunningServer]:
    _need("named")
    with dnsservers.named_with_broken_zone(workdir) as server:
        yield server


@pytest.fixture
def namespace() -> Iterator[str]:
    """A fresh network namespace with only its loopback up; deleted afterwards."""
    if os.geteuid() != 0:
        pytest.skip("needs root for network namespaces")
    _need("ip", "nft")
    with netns.namespace() as name:
        yield name
