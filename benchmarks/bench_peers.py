"""The peers beside corednsprobe in one run: blackbox_exporter and dns_exporter.

Run by hand (not in CI):

    PYTHONPATH=. python3 benchmarks/bench_peers.py [--targets 1000] [--seconds 10]

Installs nothing. The peers come from README's benchmark section
(``apt-get install prometheus-blackbox-exporter wrk``, ``pip install
dns_exporter httpx`` in the venv: dns_exporter 1.2.3 imports httpx without
declaring it); a peer that is missing is reported as "not installed: <how>"
and skipped.

One knotd per 2,500 addresses serves cluster.local on 127.10.x.y:5353, pinned
to CPU 1. Every client asks the same question (kubernetes.default.svc A over
UDP, 1 s timeout) and accepts only NOERROR with 10.96.0.1 in the answer:

* engine: bench_probe.py's engine client (``Prober``, fresh socket and ID per
  probe), one probe per target per second, pinned to CPU 0;
* pipeline: bench_service.py's whole ``corednsprobe run`` (probe, classify,
  tracker, diagnosis, metrics) against a knot sandbox of targets/2 pods at a
  1 s interval (2 checks per pod, so the same probes/s), pinned to CPU 0;
* blackbox: prometheus-blackbox-exporter's dns prober, pinned to CPU 0;
* dns_exporter: pinned to CPU 0;

the exporters driven as Prometheus drives them: one HTTP GET per probe
(keep-alive connections, a 2 s scrape timeout), target i of N at tick + i/N,
at a fixed rate (``--rates``), and at saturation with ``wrk`` (rotating the
targets, on CPU 1); HTTP errors of the fixed-rate runs go to stderr with
the kernel's count of connections a full listen backlog dropped (Python's
http.server, which dns_exporter serves from, listens with a backlog of 5 and
closes every connection). CPU is the measured process's user+system time (all its
threads); "probes/s per core" = probes answered OK per CPU second. p50/p99 are
the client's own RTT of the DNS exchange (the exporter's reported query time;
the pipeline's are the upper edges of its RTT histogram's buckets), and for
the exporters also the HTTP round trip as the scraper sees it. Prints one
table and the ratios; asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import bench_probe  # noqa: E402
import bench_service  # noqa: E402

from tests.helpers import dnsservers  # noqa: E402

NAME = bench_probe.NAME
PORT = bench_probe.PORT
TICKS = os.sysconf("SC_CLK_TCK")
HTTP_TIMEOUT = 2.0

BLACKBOX_CONFIG = f"""\
modules:
  dns_svc:
    prober: dns
    timeout: 1s
    dns:
      query_name: {NAME}
      query_type: A
      transport_protocol: udp
      preferred_ip_protocol: ip4
      ip_protocol_fallback: false
      valid_rcodes: [NOERROR]
      validate_answer_rrs:
        fail_if_none_matches_regexp: ['.*\\t10\\.96\\.0\\.1$']
"""

DNS_EXPORTER_CONFIG = f"""\
modules:
  svc:
    protocol: udp
    query_name: {NAME}
    query_type: A
    timeout: 1
    valid_rcodes: [NOERROR]
    validate_answer_rrs:
      fail_if_none_matches_regexp: ['.*\\s10\\.96\\.0\\.1$']
"""


@dataclass(frozen=True)
class Peer:
    name: str
    binary: str
    install: str
    config: str
    path: Callable[[str], str]  # target address -> request path
    ok: re.Pattern[str]  # a body that answered OK
    rtt: re.Pattern[str]  # the exporter's own DNS exchange time, in seconds

    def command(self, config: Path, port: int) -> list[str]:
        if self.name == "blackbox":
            return [self.binary, f"--config.file={config}",
                    f"--web.listen-address=127.0.0.1:{port}", "--log.level=error"]
        return [self.binary, "-c", str(config), "-L", "127.0.0.1", "-p", str(port), "-q"]


PEERS = (
    Peer("blackbox", "prometheus-blackbox-exporter",
         "apt-get install -y prometheus-blackbox-exporter wrk", BLACKBOX_CONFIG,
         lambda a: f"/probe?module=dns_svc&target={a}:{PORT}",
         re.compile(r"^probe_success 1$", re.M),
         re.compile(r'^probe_dns_duration_seconds\{phase="request"\} ([0-9.e+-]+)$', re.M)),
    Peer("dns_exporter", "dns_exporter",
         "pip install dns_exporter httpx (in the venv)", DNS_EXPORTER_CONFIG,
         lambda a: f"/query?module=svc&server={a}:{PORT}",
         re.compile(r"^dnsexp_dns_query_success 1(\.0)?$", re.M),
         re.compile(r"^dnsexp_dns_query_time_seconds\{.*\} ([0-9.e+-]+)$", re.M)),
)


def cpu_seconds(pid: int) -> float:
    return bench_service.cpu_seconds(pid)


def free_port() -> int:
    return bench_service.free_port()


def percentile(values: list[float], q: float) -> float:
    return bench_probe.percentile(values, q)


def listen_overflows() -> int:
    """The kernel's count of connections dropped because a listen backlog was full."""
    lines = [line.split() for line in Path("/proc/net/netstat").read_text().splitlines()
             if line.startswith("TcpExt:")]
    return int(dict(zip(lines[0], lines[1], strict=True)).get("ListenOverflows", 0))


def missing(peer: Peer) -> str | None:
    if shutil.which(peer.binary) is None:
        return f"not installed: {peer.install}"
    if peer.name == "dns_exporter":
        check = subprocess.run([sys.executable, "-c", "import dns_exporter.exporter, httpx"],
                               capture_output=True)
        if check.returncode:
            return f"not installed: {peer.install}"
    return None


@contextlib.contextmanager
def running(peer: Peer, workdir: Path) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    config = workdir / f"{peer.name}.yml"
    config.write_text(peer.config)
    port = free_port()
    proc = subprocess.Popen(["taskset", "-c", "0", *peer.command(config, port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
                break
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError(f"{peer.name} did not start")
            time.sleep(0.1)
        yield proc, port
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


async def fixed_rate(peer: Peer, port: int, pid: int, targets: list[str], rate: int,
                     seconds: float) -> dict[str, Any]:
    """GET one probe per 1/rate s (target i at tick + i/rate), as Prometheus's scrape
    loops do; measure CPU, OK probes, the exporter's RTT and the HTTP round trip."""
    import aiohttp

    loop = asyncio.get_running_loop()
    rtts: list[float] = []
    https: list[float] = []
    failed = 0
    errors: Counter[str] = Counter()
    measuring = False
    pending: set[asyncio.Task[None]] = set()
    connector = aiohttp.TCPConnector(limit=512, force_close=False)
    timeout = aiohttp.ClientTimeout(total=HTTP_TIMEOUT)
    base = f"http://127.0.0.1:{port}"
    overflows = listen_overflows()
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        async def one(address: str) -> None:
            nonlocal failed
            counted = measuring
            started = time.perf_counter()
            try:
                async with session.get(base + peer.path(address)) as response:
                    body = await response.text()
            except (aiohttp.ClientError, TimeoutError) as exc:
                body = ""
                errors[type(exc).__name__] += 1
            took = time.perf_counter() - started
            if not counted:
                return
            m = peer.rtt.search(body)
            if peer.ok.search(body) and m:
                rtts.append(float(m.group(1)))
                https.append(took)
            else:
                failed += 1

        def spawn(address: str) -> None:
            task = loop.create_task(one(address))
            pending.add(task)
            task.add_done_callback(pending.discard)

        warmup = 1
        start = loop.time() + 0.05
        c0 = t0 = 0.0
        for second in range(warmup + int(seconds)):
            tick = start + second
            for i in range(rate):
                loop.call_at(tick + i / rate, spawn, targets[(second * rate + i) % len(targets)])
            await asyncio.sleep(max(0.0, tick - loop.time()))
            if second == warmup:
                measuring, c0, t0 = True, cpu_seconds(pid), time.monotonic()
        await asyncio.sleep(max(0.0, start + warmup + int(seconds) - loop.time()))
        c1, t1 = cpu_seconds(pid), time.monotonic()
        while pending:
            await asyncio.gather(*list(pending))
    if errors:
        print(f"# {peer.name} {rate}/s: HTTP errors {dict(errors)}, connections dropped by "
              f"a full listen backlog (machine-wide): {listen_overflows() - overflows}",
              file=sys.stderr)
    return row(f"{rate}/s", c1 - c0, t1 - t0, rtts, failed, https)


def saturation(peer: Peer, port: int, pid: int, targets: list[str], seconds: float,
               workdir: Path) -> dict[str, Any]:
    """wrk on CPU 1, 16 connections, the targets in turn; CPU of the exporter."""
    paths = ", ".join(f'"{peer.path(a)}"' for a in targets[:1000])
    script = workdir / f"{peer.name}.lua"
    script.write_text(f"""\
local paths = {{{paths}}}
local i = 0
request = function()
  i = i % #paths + 1
  return wrk.format("GET", paths[i])
end
""")
    command = ["taskset", "-c", "1", "wrk", "-t1", "-c16", f"-d{int(seconds)}s",
               f"--timeout={HTTP_TIMEOUT:g}s", "--latency", "-s", str(script),
               f"http://127.0.0.1:{port}/"]
    c0, t0 = cpu_seconds(pid), time.monotonic()
    out = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 30).stdout
    c1, t1 = cpu_seconds(pid), time.monotonic()
    done = re.search(r"(\d+) requests in", out)
    errors = sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", out))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    probes = int(done.group(1)) if done else 0
    failed = errors + (int(non2xx.group(1)) if non2xx else 0)
    r = row("saturation", c1 - c0, t1 - t0, [], failed, [], probes=max(0, probes - failed))
    lat = dict(re.findall(r"^\s+(50|99)(?:\.000)?%\s+([0-9.]+\w+)$", out, re.M))
    r["http_p50_ms"], r["http_p99_ms"] = _ms(lat.get("50")), _ms(lat.get("99"))
    return r


def _ms(text: str | None) -> float:
    if not text:
        return float("nan")
    m = re.fullmatch(r"([0-9.]+)(us|ms|s|m)", text)
    if not m:
        return float("nan")
    return float(m.group(1)) * {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 6e4}[m.group(2)]


def row(mode: str, cpu: float, wall: float, rtts: list[float], failed: int,
        https: list[float], probes: int | None = None) -> dict[str, Any]:
    ok = len(rtts) if probes is None else probes
    return {
        "mode": mode, "cpu_pct": 100 * cpu / wall if wall else float("nan"),
        "us_per_probe": 1e6 * cpu / ok if ok else float("nan"),
        "per_core": ok / cpu if cpu else float("nan"),
        "probes_per_s": ok / wall if wall else float("nan"),
        "p50_ms": 1000 * percentile(rtts, 0.5), "p99_ms": 1000 * percentile(rtts, 0.99),
        "http_p50_ms": 1000 * percentile(https, 0.5), "http_p99_ms": 1000 * percentile(https, 0.99),
        "failed": failed, "seconds": wall,
    }


def engine_row(count: int, seconds: int) -> dict[str, Any]:
    r = bench_probe.measure("engine", count, seconds)
    ok = r["probes"] - r["failed"]
    cpu = r["us_per_probe"] * r["probes"] / 1e6
    return {"mode": f"{count}/s", "cpu_pct": r["cpu_pct"], "us_per_probe": r["us_per_probe"],
            "per_core": ok / cpu if cpu else float("nan"),
            "probes_per_s": ok / seconds, "p50_ms": r["p50_ms"], "p99_ms": r["p99_ms"],
            "http_p50_ms": float("nan"), "http_p99_ms": float("nan"), "failed": r["failed"],
            "seconds": seconds}


def pipeline_row(count: int, seconds: int) -> dict[str, Any]:
    r = bench_service.measure(max(1, count // 2), 1.0, seconds, 15.0)
    return {"mode": f"{count}/s", "cpu_pct": r["cpu_pct"], "us_per_probe": r["us_per_probe"],
            "per_core": 1e6 / r["us_per_probe"] if r["us_per_probe"] else float("nan"),
            "probes_per_s": r["probes_per_s"], "p50_ms": r["p50_ms"], "p99_ms": r["p99_ms"],
            "http_p50_ms": float("nan"), "http_p99_ms": float("nan"),
            "failed": float("nan"), "seconds": seconds}


def report(rows: list[tuple[str, dict[str, Any]]], skipped: dict[str, str]) -> None:
    cols = ("cpu_pct", "us_per_probe", "per_core", "probes_per_s", "p50_ms", "p99_ms",
            "http_p50_ms", "http_p99_ms", "failed")
    heads = ("CPU%", "µs/probe", "/s per core", "probes/s", "p50 ms", "p99 ms",
             "HTTP p50", "HTTP p99", "failed")
    print(f"{'client':<13} {'offered':<11} " + " ".join(f"{h:>11}" for h in heads))
    for client, r in rows:
        cells = []
        for c in cols:
            v = r[c]
            cells.append(f"{v:>11.0f}" if c in ("per_core", "probes_per_s", "failed")
                         and v == v else f"{v:>11.3f}" if c.endswith("_ms") else f"{v:>11.1f}")
        print(f"{client:<13} {r['mode']:<11} " + " ".join(cells))
    for name, why in skipped.items():
        print(f"{name:<13} {why}")
    print()

    def find(client: str, mode: str) -> dict[str, Any] | None:
        return next((r for c, r in rows if c == client and r["mode"] == mode), None)

    fixed = rows[0][1]["mode"]  # the engine's rate, which every peer is also driven at
    print(f"µs CPU per probe, ratios (below 1: the first is cheaper); at {fixed} offered where "
          "the peer kept up (at most 1% failed), and against the peer at saturation:")
    for a, b in (("engine", "blackbox"), ("pipeline", "blackbox"), ("pipeline", "dns_exporter")):
        mine, same, sat = find(a, fixed), find(b, fixed), find(b, "saturation")
        if mine is None or (same is None and sat is None):
            print(f"  {a}/{b}: not measured")
            continue
        text = f"  {a}/{b}:"
        if same is not None:
            asked = same["probes_per_s"] + same["failed"] / max(1.0, same["seconds"])
            if same["failed"] <= 0.01 * max(1.0, asked * same["seconds"]):
                text += f" {mine['us_per_probe'] / same['us_per_probe']:.2f} at {fixed}"
            else:
                text += (f" n/a at {fixed} ({b} did not keep up: {same['failed']:.0f} "
                         "probes failed)")
        if sat is not None:
            text += f"; {mine['us_per_probe'] / sat['us_per_probe']:.2f} vs its saturation"
        print(text)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--targets", type=int, default=1000,
                    help="targets (addresses); also the fixed rate of engine and pipeline")
    ap.add_argument("--rates", default="300,1000", help="fixed rates the exporters are driven at")
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--skip", default="", help="comma-separated clients to leave out")
    args = ap.parse_args()
    skip = set(filter(None, args.skip.split(",")))
    rates = [int(r) for r in args.rates.split(",")]
    if args.targets not in rates:
        rates.append(args.targets)
    os.sched_setaffinity(0, {1})  # the driver beside knotd; the measured process on CPU 0
    targets = bench_probe.addresses(args.targets)
    rows: list[tuple[str, dict[str, Any]]] = []
    skipped: dict[str, str] = {}
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        work = Path(tmp)
        for first in range(0, len(targets), bench_probe.PER_KNOT):
            server = stack.enter_context(dnsservers.knot(
                work, targets[first:first + bench_probe.PER_KNOT], PORT))
            subprocess.run(["taskset", "-a", "-p", "-c", "1", str(server.process.pid)],
                           check=True, capture_output=True)
        if "engine" not in skip:
            rows.append(("engine", engine_row(args.targets, args.seconds)))
            print("# engine: done", file=sys.stderr)
        for peer in PEERS:
            if peer.name in skip:
                continue
            why = missing(peer)
            if why:
                skipped[peer.name] = why
                continue
            with running(peer, work) as (proc, port):
                for rate in rates:
                    rows.append((peer.name, asyncio.run(
                        fixed_rate(peer, port, proc.pid, targets, rate, args.seconds))))
                    print(f"# {peer.name} {rate}/s: done", file=sys.stderr)
                if shutil.which("wrk") is None:
                    skipped[f"{peer.name} sat."] = "wrk not installed: apt-get install -y wrk"
                else:
                    rows.append((peer.name, saturation(peer, port, proc.pid, targets,
                                                       args.seconds, work)))
                    print(f"# {peer.name} saturation: done", file=sys.stderr)
    if "pipeline" not in skip:  # after the peers' knotd is gone: its own sandbox's knotd
        rows.append(("pipeline", pipeline_row(args.targets, args.seconds)))
        print("# pipeline: done", file=sys.stderr)
    print(f"load average at the end: {' '.join(Path('/proc/loadavg').read_text().split()[:3])}")
    report(rows, skipped)




if __name__ == "__main__":
    main()
