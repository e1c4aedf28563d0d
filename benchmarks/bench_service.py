"""CPU and memory of `corednsprobe run` against a sandbox of N CoreDNS pods.

Run by hand (not in CI; knotd and taskset must be installed):

    PYTHONPATH=. python3 benchmarks/bench_service.py --pods 5000 --interval 1 --seconds 30

Starts a sandbox whose pods answer DNS (``--dns knot``, the default:
benchmarks/knot_sandbox.py, one knotd per 2,500 pods on 127.10.x.y, so it
reaches 5,000 pods and more; ``--dns inprocess``: `corednsprobe sandbox`, at
most 762 pods, answered in the sandbox's process) and `corednsprobe run`
against it pinned to CPU 0 (the sandbox and knotd on CPU 1), lets the service
warm up, then samples the run process's CPU time and RSS from /proc and its
/metrics. Beside it, the same process's idle reference: `corednsprobe run`
against a sandbox with one pod, so the ratio shows what the targets
themselves cost. The columns are bench_probe.py's (the whole pipeline: probe,
classify, tracker, diagnosis, metrics); p50/p99 are the upper edges of the
RTT histogram's buckets. Prints one table; asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime


def rss_mib(pid: int) -> float:
    m = re.search(r"VmRSS:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text())
    return int(m.group(1)) / 1024 if m else float("nan")


def threads(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/task"))


def metric(text: str, name: str) -> float:
    m = re.search(rf"^{name} ([0-9.e+]+)$", text, re.M)
    return float(m.group(1)) if m else float("nan")


def quantile(text: str, q: float) -> float:
    """The upper edge of the RTT histogram bucket holding quantile ``q`` (all labels)."""
    edges: dict[float, float] = {}
    for le, value in re.findall(
            r'^corednsprobe_probe_rtt_seconds_bucket\{.*le="([^"]+)".*\} ([0-9.e+]+)$', text, re.M):
        edges[float(le)] = edges.get(float(le), 0.0) + float(value)
    total = edges.get(float("inf"), 0.0)
    for le in sorted(edges):
        if total and edges[le] >= q * total:
            return le
    return float("nan")


def sandbox_command(dns: str, pods: int, kubeconfig: Path) -> list[str]:
    if dns == "knot":
        return ["taskset", "-c", "1", sys.executable, str(ROOT / "benchmarks" / "knot_sandbox.py"),
                "--pods", str(pods), "--kubeconfig-out", str(kubeconfig)]
    return ["taskset", "-c", "1", sys.executable, "-m", "corednsprobe", "sandbox", "--pods",
            str(pods), "--dns", "inprocess", "--kubeconfig-out", str(kubeconfig)]


def measure(pods: int, interval: float, seconds: float, warmup: float,
            dns: str = "knot") -> dict[str, float]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("COREDNSPROBE_")}
    env["PYTHONPATH"] = str(ROOT)
    with tempfile.TemporaryDirectory() as tmp:
        kubeconfig = Path(tmp) / "kubeconfig"
        sandbox = subprocess.Popen(sandbox_command(dns, pods, kubeconfig),
                                   env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        port = free_port()
        run = None
        try:
            deadline = time.monotonic() + 600
            while not kubeconfig.exists():
                if time.monotonic() > deadline:
                    raise RuntimeError("the sandbox did not start")
                time.sleep(0.2)
            time.sleep(2)  # let every pod become ready
            run_env = {**env, "COREDNSPROBE_INTERVAL": str(interval),
                       "COREDNSPROBE_LISTEN": f"127.0.0.1:{port}",
                       "COREDNSPROBE_LOG_LEVEL": "warning", "COREDNSPROBE_MIN_POD_AGE": "0"}
            run = subprocess.Popen(
                ["taskset", "-c", "0", sys.executable, "-m", "corednsprobe", "run",
                 "--kubeconfig", str(kubeconfig)],
                env=run_env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(warmup)
            url = f"http://127.0.0.1:{port}/metrics"
            before = urllib.request.urlopen(url, timeout=10).read().decode()
            c0, t0 = cpu_seconds(run.pid), time.monotonic()
            time.sleep(seconds)
            c1, t1 = cpu_seconds(run.pid), time.monotonic()
            after = urllib.request.urlopen(url, timeout=10).read().decode()
            probes = (sum(float(v) for v in re.findall(
                r"^corednsprobe_probes_total\{.*\} ([0-9.e+]+)$", after, re.M))
                - sum(float(v) for v in re.findall(
                    r"^corednsprobe_probes_total\{.*\} ([0-9.e+]+)$", before, re.M)))
            return {
                "pods": pods,
                "cpu_pct": 100 * (c1 - c0) / (t1 - t0),
                "us_per_probe": 1e6 * (c1 - c0) / probes if probes else float("nan"),
                "probes_per_s": probes / (t1 - t0),
                "p50_ms": 1000 * quantile(after, 0.5),
                "p99_ms": 1000 * quantile(after, 0.99),
                "rss_mib": rss_mib(run.pid),
                "threads": threads(run.pid),
                "rounds": metric(after, "corednsprobe_rounds_total")
                - metric(before, "corednsprobe_rounds_total"),
                "overruns": metric(after, "corednsprobe_round_overruns_total"),
            }
        finally:
            for proc in (run, sandbox):
                if proc is not None and proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
                    try:
                        proc.wait(15)
                    except subprocess.TimeoutExpired:
                        proc.kill()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pods", type=int, default=50)
    ap.add_argument("--interval", type=float, default=1.0)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--warmup", type=float, default=10.0)
    ap.add_argument("--dns", choices=("knot", "inprocess"), default="knot")
    args = ap.parse_args()
    rows = [measure(1, args.interval, args.seconds, args.warmup, args.dns),
            measure(args.pods, args.interval, args.seconds, args.warmup, args.dns)]
    cols = ["pods", "cpu_pct", "us_per_probe", "probes_per_s", "p50_ms", "p99_ms", "rss_mib",
            "threads", "rounds", "overruns"]
    print(f"corednsprobe run, interval {args.interval:g} s, {args.seconds:g} s measured "
          f"after {args.warmup:g} s warm-up (CPU % of one core)")
    print(" ".join(f"{c:>13}" for c in cols))
    for r in rows:
        print(" ".join(f"{r[c]:>13.2f}" if isinstance(r[c], float) else f"{r[c]:>13}"
                       for c in cols))
    ref, big = rows
    print(f"ratio {args.pods} pods / 1 pod: CPU {big['cpu_pct'] / ref['cpu_pct']:.2f}x, "
          f"RSS {big['rss_mib'] / ref['rss_mib']:.2f}x")


if __name__ == "__main__":
    main()
