"""The sandbox with pods that scale: knotd answers for every pod on its own 127.10.x.y.

Run by bench_service.py (not in CI); by hand:

    PYTHONPATH=. python3 benchmarks/knot_sandbox.py --pods 5000 --kubeconfig-out /tmp/kc

The in-process backend stops at 762 pods (3 x 254 addresses) and answers from
Python in the sandbox's own process. Here the pods' DNS is knotd, one instance
per 2,500 addresses in its ``listen`` list (one knotd holds ~4,370), started on
the first pod with the sandbox's zone and pinned to CPU 1; the ClusterIP relay,
the API server and the controllers stay the in-process backend's. A pod
that is removed keeps its address answering (knotd's list is fixed): the
benchmark does not restart pods.

The sandbox's ReplicaSet controller finds a new pod's slot by scanning every
pod (O(pods) per pod: 5,000 pods took over five minutes to create); no pod is
ever replaced here, so this sandbox hands slots out in order instead.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from corednsprobe.sandbox import controllers  # noqa: E402
from corednsprobe.sandbox.backend import Fault, FaultKind, ZoneData  # noqa: E402
from corednsprobe.sandbox.cluster import Sandbox, SandboxConfig  # noqa: E402
from corednsprobe.sandbox.inprocess import InProcessBackend, pick_free_port  # noqa: E402
from tests.helpers import dnsservers  # noqa: E402

PER_KNOT = 2500


def _slots_in_order() -> None:
    slots = itertools.count()
    controllers.Controllers._free_slot = lambda self, rs: next(slots)  # type: ignore[method-assign]


def pod_addresses(count: int) -> list[str]:
    return [f"127.10.{i // 250}.{i % 250 + 1}" for i in range(count)]


class KnotBackend(InProcessBackend):
    name = "knot"

    def __init__(self, pods: int, workdir: Path, domain: str = "cluster.local") -> None:
        self.addresses = pod_addresses(pods + 10)  # room for a few replacements
        super().__init__(domain, pick_free_port([self.addresses[0], "127.52.0.1"]))
        self._pod_ips = iter(self.addresses)
        self._workdir = workdir
        self._servers = contextlib.ExitStack()
        self._started = False
        self._knot_pods: set[str] = set()

    async def close(self) -> None:
        await super().close()
        self._servers.close()

    def _start_knot(self, zone: ZoneData) -> None:
        records = [f"{name}. 30 IN {'AAAA' if ':' in a else 'A'} {a}"
                   for name, addrs in zone.records.items() for a in addrs]
        for first in range(0, len(self.addresses), PER_KNOT):
            server = self._servers.enter_context(dnsservers.knot(
                self._workdir, self.addresses[first:first + PER_KNOT], self.port, records))
            subprocess.run(["taskset", "-a", "-p", "-c", "1", str(server.process.pid)],
                           check=True, capture_output=True)

    async def add_pod(self, pod: str, ip: str, zone: ZoneData) -> None:
        if not self._started:
            self._started = True
            await asyncio.to_thread(self._start_knot, zone)
        self._knot_pods.add(pod)

    async def remove_pod(self, pod: str) -> None:
        self._knot_pods.discard(pod)

    async def pod_alive(self, pod: str) -> bool:
        return pod in self._knot_pods

    async def update_zone(self, zone: ZoneData) -> None:
        return None

    async def set_pod_fault(self, pod: str, fault: Fault) -> None:
        if fault.kind is not FaultKind.NONE:
            raise ValueError("the knot sandbox injects no faults")


async def serve(pods: int, kubeconfig: Path) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    with tempfile.TemporaryDirectory() as tmp:
        backend = KnotBackend(pods, Path(tmp))
        config = SandboxConfig(replicas=pods, tls=True)
        async with Sandbox(backend, config) as sandbox:
            with contextlib.suppress(TimeoutError):
                await sandbox.wait_ready(within=300)
            sandbox.write_kubeconfig(kubeconfig)
            print("ready", flush=True)
            await stop.wait()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pods", type=int, default=100)
    ap.add_argument("--kubeconfig-out", type=Path, required=True)
    args = ap.parse_args()
    import uvloop

    _slots_in_order()
    uvloop.run(serve(args.pods, args.kubeconfig_out))


if __name__ == "__main__":
    main()
