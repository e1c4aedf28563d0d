"""A seeded chaos run: pod, shared and API faults, prober kills and hand-overs.

Run by hand as root (not in CI; it needs network namespaces, nft and unbound):

    PYTHONPATH=. python3 benchmarks/chaos.py --minutes 30 --seed 1

A netns sandbox (real unbound per CoreDNS pod, the ClusterIP as nft DNAT) runs
in this process; ``--probers`` copies of ``corednsprobe run`` run as separate
processes against it with ``evict`` remediation, so that they can be killed.
A seeded schedule draws one episode after another:

- a pod fault on one pod (drop, reject, servfail, delay beyond the timeout,
  wrong answers): a true pod fault, which one eviction should repair;
- 30% loss on one pod: lossy but working, never a reason to restart;
- a flapping slot (8 s broken, 4 s fine, following replacements): a true pod
  fault that restarts cannot cure, so the service must give up;
- a shared fault: every pod at once, every pod staggered 0.5-5 s apart, or the
  Service path broken: never a reason to restart a pod;

and, independently, API faults (compaction/410, a stalled watch, reset
connections, a burst of 5xx, evictions answered 429 by a PDB with no
disruptions allowed) and prober events (kill -9 and restart, SIGTERM of the
leader). Every eviction is read from the sandbox (a DNS pod that gains a
deletionTimestamp: nothing else deletes them) and judged: *rightful* when that
pod (or its slot) had a true pod fault within the lookback before it, else
*wrongful*. At the end one table is printed: faults injected, true pod faults,
restarts, wrongful restarts, missed faults (a single-pod fault that ended
without its pod restarted), crashes (a prober that exited by itself) and the
time from fault to eviction.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import signal
import socket
import statistics
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from corednsprobe import logs  # noqa: E402
from corednsprobe.sandbox.cluster import Sandbox, SandboxConfig  # noqa: E402
from corednsprobe.sandbox.controllers import Timings  # noqa: E402
from corednsprobe.sandbox.netns import NetnsBackend  # noqa: E402

POD_FAULTS = ("drop", "reject", "servfail", "delay:1000", "wrong-answer")
PROBER_ENV = {
    "COREDNSPROBE_INTERVAL": "0.5",
    "COREDNSPROBE_TIMEOUT": "0.2",
    "COREDNSPROBE_WINDOW": "10",
    "COREDNSPROBE_MIN_POD_AGE": "5",
    "COREDNSPROBE_REMEDIATION": "evict",
    "COREDNSPROBE_COOLDOWN": "10",
    "COREDNSPROBE_MAX_RESTARTS_PER_HOUR": "60",
    "COREDNSPROBE_PROBER_NAMESPACE": "kube-system",
    "COREDNSPROBE_LOG_LEVEL": "warning",
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Truth:
    """When each pod (by name) and each slot had a true pod fault."""

    by_pod: dict[str, list[list[float]]] = field(default_factory=dict)
    by_slot: dict[int, list[list[float]]] = field(default_factory=dict)

    def start(self, book: dict[str, list[list[float]]] | dict[int, list[list[float]]],
              key: object, now: float) -> None:
        book.setdefault(key, []).append([now, float("inf")])  # type: ignore[arg-type]

    def end(self, book: dict[str, list[list[float]]] | dict[int, list[list[float]]],
            key: object, now: float) -> None:
        spans = book.get(key) or []  # type: ignore[call-overload]
        if spans and spans[-1][1] == float("inf"):
            spans[-1][1] = now

    def faulty(self, pod: str, slot: int | None, at: float, lookback: float) -> bool:
        spans = list(self.by_pod.get(pod, ()))
        if slot is not None:
            spans += self.by_slot.get(slot, ())
        return any(start <= at and end >= at - lookback for start, end in spans)


@dataclass
class Eviction:
    at: float
    pod: str
    slot: int | None
    rightful: bool


@dataclass
class Tally:
    episodes: dict[str, int] = field(default_factory=dict)
    api_faults: dict[str, int] = field(default_factory=dict)
    prober_events: dict[str, int] = field(default_factory=dict)
    evictions: list[Eviction] = field(default_factory=list)
    single_faults: list[tuple[str, float, float]] = field(default_factory=list)  # pod, from, to
    crashes: list[str] = field(default_factory=list)

    def count(self, book: dict[str, int], name: str) -> None:
        book[name] = book.get(name, 0) + 1


class Prober:
    """One ``corednsprobe run`` process, restartable."""

    def __init__(self, index: int, kubeconfig: Path, logdir: Path) -> None:
        self.index = index
        self.kubeconfig = kubeconfig
        self.port = free_port()
        self.log = logdir / f"prober-{index}.log"
        self.proc: asyncio.subprocess.Process | None = None
        self.expected_exit = False

    async def start(self) -> None:
        env = {**os.environ, **PROBER_ENV, "COREDNSPROBE_LISTEN": f"127.0.0.1:{self.port}",
               "PYTHONPATH": str(ROOT)}
        handle = self.log.open("ab")
        self.expected_exit = False
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "corednsprobe", "run", "--kubeconfig", str(self.kubeconfig),
            env=env, stdout=handle, stderr=handle, start_new_session=True)
        handle.close()

    def leading(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=1) as r:
                text = r.read().decode()
        except OSError:
            return False
        return any(line.startswith("corednsprobe_leader ") and line.endswith(" 1.0")
                   for line in text.splitlines())

    async def stop(self, sig: int) -> None:
        if self.proc is None or self.proc.returncode is not None:
            return
        self.expected_exit = True
        self.proc.send_signal(sig)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.proc.wait(), 15)
        if self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()


class Chaos:
    def __init__(self, sandbox: Sandbox, probers: list[Prober], rng: random.Random,
                 lookback: float) -> None:
        self.sandbox = sandbox
        self.probers = probers
        self.rng = rng
        self.lookback = lookback
        self.truth = Truth()
        self.tally = Tally()
        self.t0 = time.monotonic()
        self.seen_terminating: set[str] = set()

    def now(self) -> float:
        return time.monotonic() - self.t0

    def live_pods(self) -> list[dict[str, object]]:
        return [p for p in self.sandbox.state()["pods"] if not p["terminating"]]

    # watchers ---------------------------------------------------------------

    async def watch_evictions(self) -> None:
        while True:
            for pod in self.sandbox.state()["pods"]:
                name = str(pod["name"])
                if pod["terminating"] and name not in self.seen_terminating:
                    self.seen_terminating.add(name)
                    slot = pod["slot"] if isinstance(pod["slot"], int) else None
                    at = self.now()
                    rightful = self.truth.faulty(name, slot, at, self.lookback)
                    self.tally.evictions.append(Eviction(at, name, slot, rightful))
                    print(f"{at:8.1f}s eviction of {name} (slot {slot}): "
                          f"{'rightful' if rightful else 'WRONGFUL'}", flush=True)
            await asyncio.sleep(0.1)

    async def watch_crashes(self) -> None:
        while True:
            for p in self.probers:
                if p.proc is not None and p.proc.returncode is not None and not p.expected_exit:
                    self.tally.crashes.append(f"prober-{p.index} exit {p.proc.returncode} "
                                              f"at {self.now():.1f}s (log {p.log})")
                    print(f"{self.now():8.1f}s CRASH prober-{p.index} "
                          f"exit {p.proc.returncode}", flush=True)
                    await p.start()
            await asyncio.sleep(0.5)

    # pod and shared episodes ---------------------------------------------------

    async def episode(self) -> None:
        kind = self.rng.choices(
            ("pod", "loss", "flapping", "all", "staggered", "service"),
            weights=(45, 10, 10, 10, 15, 10))[0]
        self.tally.count(self.tally.episodes, kind)
        length = self.rng.uniform(20, 40)
        print(f"{self.now():8.1f}s episode {kind} for {length:.0f}s", flush=True)
        await getattr(self, f"_episode_{kind}")(length)
        await self.sandbox.set_all_pods_fault("none")
        await self.sandbox.set_service_broken(False)
        await asyncio.sleep(self.rng.uniform(10, 20))  # let health come back

    async def _episode_pod(self, length: float) -> None:
        pods = self.live_pods()
        if not pods:
            return
        pod = str(self.rng.choice(pods)["name"])
        fault = self.rng.choice(POD_FAULTS)
        start = self.now()
        print(f"{start:8.1f}s   {pod}: {fault}", flush=True)
        self.truth.start(self.truth.by_pod, pod, start)
        await self.sandbox.set_pod_fault(pod, fault)
        await asyncio.sleep(length)
        await self.sandbox.set_pod_fault(pod, "none")
        self.truth.end(self.truth.by_pod, pod, self.now())
        self.tally.single_faults.append((f"{pod} ({fault})", start, self.now()))

    async def _episode_loss(self, length: float) -> None:
        pods = self.live_pods()
        if pods:
            await self.sandbox.set_pod_fault(str(self.rng.choice(pods)["name"]), "loss:30")
            await asyncio.sleep(length)

    async def _episode_flapping(self, length: float) -> None:
        slots = [p["slot"] for p in self.live_pods() if isinstance(p["slot"], int)]
        if not slots:
            return
        slot = int(self.rng.choice(slots))
        end = self.now() + max(length, 36.0)
        while self.now() < end:
            self.truth.start(self.truth.by_slot, slot, self.now())
            await self.sandbox.set_slot_fault(slot, "drop")
            await asyncio.sleep(8)
            await self.sandbox.set_slot_fault(slot, "none")
            self.truth.end(self.truth.by_slot, slot, self.now())
            await asyncio.sleep(4)

    async def _episode_all(self, length: float) -> None:
        await self.sandbox.set_all_pods_fault(self.rng.choice(("servfail", "drop")))
        await asyncio.sleep(length)

    async def _episode_staggered(self, length: float) -> None:
        gap = self.rng.choice((0.5, 2.0, 5.0))
        for pod in self.live_pods():
            await self.sandbox.set_pod_fault(str(pod["name"]),
                                             self.rng.choice(("servfail", "drop")))
            await asyncio.sleep(gap)
        await asyncio.sleep(length)

    async def _episode_service(self, length: float) -> None:
        await self.sandbox.set_service_broken(True)
        await asyncio.sleep(length)

    # API faults and prober events ----------------------------------------------

    async def api_faults(self) -> None:
        while True:
            await asyncio.sleep(self.rng.uniform(20, 60))
            kind = self.rng.choice(("compact", "stall", "reset", "5xx", "429"))
            self.tally.count(self.tally.api_faults, kind)
            print(f"{self.now():8.1f}s api fault {kind}", flush=True)
            if kind == "compact":
                self.sandbox.compact_history()
                self.sandbox.set_watch_expiry(self.rng.choice(("expired", "gone", "http")))
            elif kind == "stall":
                self.sandbox.stall_watches(True)
                await asyncio.sleep(self.rng.uniform(20, 90))
                self.sandbox.stall_watches(False)
            elif kind == "reset":
                self.sandbox.reset_connections(self.rng.randint(0, 3))
            elif kind == "5xx":
                self.sandbox.fail_requests(self.rng.randint(3, 10),
                                           self.rng.choice((500, 503)))
            else:
                self.sandbox.pause_pdb_status(True)
                await asyncio.sleep(self.rng.uniform(10, 30))
                self.sandbox.pause_pdb_status(False)

    async def prober_events(self) -> None:
        while True:
            await asyncio.sleep(self.rng.uniform(40, 120))
            if self.rng.random() < 0.5:
                victim = self.rng.choice(self.probers)
                kind, sig = "kill -9", signal.SIGKILL
            else:
                leaders = [p for p in self.probers if p.leading()]
                victim = leaders[0] if leaders else self.rng.choice(self.probers)
                kind, sig = "leader SIGTERM", signal.SIGTERM
            self.tally.count(self.tally.prober_events, kind)
            print(f"{self.now():8.1f}s {kind} prober-{victim.index}", flush=True)
            await victim.stop(sig)
            await asyncio.sleep(self.rng.uniform(0, 5))
            await victim.start()


def report(chaos: Chaos, minutes: float, seed: int) -> str:
    t = chaos.tally
    evictions = t.evictions
    wrongful = [e for e in evictions if not e.rightful]
    missed = [f for f in t.single_faults
              if not any(f[0].startswith(e.pod) and f[1] <= e.at <= f[2] + chaos.lookback
                         for e in evictions)]
    repair = [min(e.at for e in evictions if pod.startswith(e.pod) and start <= e.at) - start
              for pod, start, _ in t.single_faults
              if any(pod.startswith(e.pod) and start <= e.at for e in evictions)]
    true_faults = t.episodes.get("pod", 0) + t.episodes.get("flapping", 0)

    def dist(values: list[float]) -> str:
        if not values:
            return "-"
        return (f"median {statistics.median(values):.1f} s, min {min(values):.1f} s, "
                f"max {max(values):.1f} s")

    rows = [
        ("duration", f"{minutes:g} min, seed {seed}"),
        ("episodes", ", ".join(f"{k} {v}" for k, v in sorted(t.episodes.items()))),
        ("API faults", ", ".join(f"{k} {v}" for k, v in sorted(t.api_faults.items())) or "-"),
        ("prober events",
         ", ".join(f"{k} {v}" for k, v in sorted(t.prober_events.items())) or "-"),
        ("faults injected", str(sum(t.episodes.values()) + sum(t.api_faults.values())
                                + sum(t.prober_events.values()))),
        ("true pod faults", f"{true_faults} (single pod {t.episodes.get('pod', 0)}, "
                            f"flapping slot {t.episodes.get('flapping', 0)})"),
        ("restarts made", str(len(evictions))),
        ("wrongful restarts", str(len(wrongful)) + "".join(
            f"\n    {e.at:.1f}s {e.pod}" for e in wrongful)),
        ("missed single-pod faults", str(len(missed)) + "".join(
            f"\n    {pod} {start:.1f}-{end:.1f}s" for pod, start, end in missed)),
        ("crashes", str(len(t.crashes)) + "".join(f"\n    {c}" for c in t.crashes)),
        ("fault -> eviction (single pod)", dist(repair)),
    ]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"| {k:<{width}} | {v} |" for k, v in rows)


async def main(args: argparse.Namespace) -> int:
    logs.configure("warning", "console")
    rng = random.Random(args.seed)
    logdir = Path(tempfile.mkdtemp(prefix="cdp-chaos-"))
    window = float(PROBER_ENV["COREDNSPROBE_WINDOW"])
    lookback = window + 10.0
    config = SandboxConfig(replicas=args.pods, termination_grace_seconds=1,
                           pdb_min_available=args.pods - 1,
                           timings=Timings(readiness_period=0.2, resync_period=1.0))
    async with Sandbox(NetnsBackend(domain="cluster.local"), config) as sandbox:
        await sandbox.wait_ready(within=60)
        kubeconfig = sandbox.write_kubeconfig(logdir / "kubeconfig")
        probers = [Prober(i, kubeconfig, logdir) for i in range(args.probers)]
        for p in probers:
            await p.start()
        chaos = Chaos(sandbox, probers, rng, lookback)
        print(f"chaos: {args.pods} pods, {args.probers} probers, logs in {logdir}", flush=True)
        await asyncio.sleep(15)  # first lists, first windows
        try:
            async with asyncio.timeout(args.minutes * 60), asyncio.TaskGroup() as tg:
                tg.create_task(chaos.watch_evictions())
                tg.create_task(chaos.watch_crashes())
                tg.create_task(chaos.api_faults())
                tg.create_task(chaos.prober_events())
                while True:
                    await chaos.episode()
        except TimeoutError:
            pass
        finally:
            for p in probers:
                await p.stop(signal.SIGTERM)
            sandbox.stall_watches(False)
    print(report(chaos, args.minutes, args.seed), flush=True)
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--pods", type=int, default=4)
    parser.add_argument("--probers", type=int, default=2)
    raise SystemExit(asyncio.run(main(parser.parse_args())))
