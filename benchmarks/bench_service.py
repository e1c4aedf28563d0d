"""CPU and memory of `corednsprobe run` against a sandbox of N CoreDNS pods.

Run by hand (not in CI; knotd and taskset must be installed):

    PYTHONPATH=. python3 benchmarks/bench_service.py --pods 5000 --interval 1 --seconds 30

Starts a sandbox whose pods answer DNS (``--dns knot``, the default:
benchmarks/knot_sandbox.py, one knotd per 2,500 pods on 127.10.x.y, so it
reaches 5,000 pods and more; ``--dns inprocess``: `corednsprobe sandbox`, at
most 762 pods, answered in the sandbox's process) and `corednsprobe run`
against it pinned to CPU 0 (the sandbox and knotd on CPU 1), lets the service
warm up, then samples the run process's CPU time and RSS from /proc and its
/metrics. ``wait_pct`` is the time its event loop was runnable but waited for
the CPU (schedstat's run delay, per wall second): a loop that is neither
running nor waiting is idle, so CPU% + wait% near 100 means the pipeline
wanted the whole core. ``server_pct`` is the CPU of the sandbox and its knotds
(all on CPU 1): near 100, the server side is what holds the rounds back.
Beside it, the same process's idle reference: `corednsprobe run`
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


def stop(*procs: subprocess.Popen[bytes] | None) -> None:
    """SIGTERM each process still running; kill one that is not gone within 15 s."""
    for proc in procs:
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()


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


def run_delay(pid: int) -> float:
    """Seconds the process's main thread (the event loop) waited on a run queue:
    runnable but not running, because other work held the CPU."""
    return int(Path(f"/proc/{pid}/schedstat").read_text().split()[1]) / 1e9


def children_cpu(parent: int) -> float:
    """CPU seconds of the sandbox process and its direct children (the knotds)."""
    total = cpu_seconds(parent)
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == parent:
                total += (int(fields[11]) + int(fields[12])) / TICKS
    return total


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
            url = f"http://127.0.0.1:{port}/metrics"
            up_by = time.monotonic() + 180  # a loaded machine starts `run` slowly
            while True:
                try:
                    urllib.request.urlopen(url, timeout=60).read()
                    break
                except OSError:
                    if time.monotonic() > up_by or run.poll() is not None:
                        raise
                    time.sleep(0.5)
            time.sleep(warmup)
            before = urllib.request.urlopen(url, timeout=60).read().decode()
            c0, d0, t0 = cpu_seconds(run.pid), run_delay(run.pid), time.monotonic()
            s0 = children_cpu(sandbox.pid)
            time.sleep(seconds)
            c1, d1, t1 = cpu_seconds(run.pid), run_delay(run.pid), time.monotonic()
            s1 = children_cpu(sandbox.pid)
            after = urllib.request.urlopen(url, timeout=60).read().decode()
            probes = (sum(float(v) for v in re.findall(
                r"^corednsprobe_probes_total\{.*\} ([0-9.e+]+)$", after, re.M))
                - sum(float(v) for v in re.findall(
                    r"^corednsprobe_probes_total\{.*\} ([0-9.e+]+)$", before, re.M)))
            return {
                "pods": pods,
                "cpu_pct": 100 * (c1 - c0) / (t1 - t0),
                "wait_pct": 100 * (d1 - d0) / (t1 - t0),
                "server_pct": 100 * (s1 - s0) / (t1 - t0),
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
            stop(run, sandbox)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pods", type=int, default=50)
    ap.add_argument("--interval", type=float, default=1.0)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--warmup", type=float, default=10.0)
    ap.add_argument("--dns", choices=("knot", "inprocess"), default="knot")
    ap.add_argument("--no-reference", action="store_true",
                    help="leave out the 1-pod idle reference")
    args = ap.parse_args()
    rows = [] if args.no_reference else [measure(1, args.interval, args.seconds, args.warmup,
                                                 args.dns)]
    rows.append(measure(args.pods, args.interval, args.seconds, args.warmup, args.dns))
    cols = ["pods", "cpu_pct", "wait_pct", "server_pct", "us_per_probe", "probes_per_s",
            "p50_ms", "p99_ms", "rss_mib", "threads", "rounds", "overruns"]
    print(f"corednsprobe run, interval {args.interval:g} s, {args.seconds:g} s measured "
          f"after {args.warmup:g} s warm-up (CPU % of one core)")
    print(" ".join(f"{c:>13}" for c in cols))
    for r in rows:
        print(" ".join(f"{r[c]:>13.2f}" if isinstance(r[c], float) else f"{r[c]:>13}"
                       for c in cols))
    big = rows[-1]
    if len(rows) == 2:
        ref = rows[0]
        print(f"ratio {args.pods} pods / 1 pod: CPU {big['cpu_pct'] / ref['cpu_pct']:.2f}x, "
              f"RSS {big['rss_mib'] / ref['rss_mib']:.2f}x")
    print(f"load average {' '.join(Path('/proc/loadavg').read_text().split()[:3])}")
    goals(big, args.pods, args.interval)


def goals(r: dict[str, float], pods: int, interval: float) -> None:
    """Issue 16's goals for the whole pipeline, beside this run's figures."""
    def verdict(ok: bool) -> str:
        return "met" if ok else "NOT met"

    offered = 2 * pods / interval
    print(f"goal: <= 40 µs CPU per probe at >= 2,000 probes/s: {r['us_per_probe']:.1f} µs at "
          f"{r['probes_per_s']:.0f}/s: "
          + (verdict(r["us_per_probe"] <= 40) if r["probes_per_s"] >= 2000 else "not at 2,000/s"))
    print(f"goal: 10,000 probes/s on one core with no overrun (5,000 pods x 2 checks at 1 s): "
          f"offered {offered:.0f}/s, done {r['probes_per_s']:.0f}/s, {r['overruns']:.0f} "
          f"overruns, CPU {r['cpu_pct']:.0f}%: "
          + (verdict(r["probes_per_s"] >= 9900 and r["overruns"] == 0) if offered >= 10000
             else "not offered 10,000/s"))
    print(f"goal: RSS <= 150 MiB at 5,000 targets: {r['rss_mib']:.1f} MiB at {pods} pods"
          + (f": {verdict(r['rss_mib'] <= 150)}" if pods >= 5000 else ""))
    print(f"goal: O(1) threads: {r['threads']} at {pods} pods")


if __name__ == "__main__":
    main()
