"""`corednsprobe demo`: the service against a local sandbox cluster, in one process.

Owns: starting the sandbox with the in-process DNS backend (no root needed),
pointing the real service at it through a kubeconfig, scripted faults
(``--fault POD=udp-drop@SECONDS``), and a compact live table per round:
targets, the diagnosis, and what remediation decided (it evicts sick pods of
the sandbox by default, as it would in a cluster; COREDNSPROBE_REMEDIATION
chooses).
Never does: anything the service would not do against a real cluster — the
service talks to the sandbox only through the Kubernetes API and DNS.

Unless the environment says otherwise, the demo runs faster than a
production default so that a fault shows within seconds: interval 2 s,
timeout 0.5 s, window 20 s, minimum pod age 5 s, and the HTTP server on
127.0.0.1:9180.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import re
import sys
import tempfile
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from corednsprobe import logs
from corednsprobe.cli.render import table
from corednsprobe.config import Settings, env_name
from corednsprobe.model import Health, HealthState, TargetKind
from corednsprobe.sandbox.backend import Fault, FaultKind
from corednsprobe.stats import Z_CHECK, failure_lower_bound

log = logs.get(__name__)

DEMO_DEFAULTS: dict[str, Any] = {
    "interval": 2.0,
    "timeout": 0.5,
    "window": 20.0,
    "min_pod_age": 5.0,
}

_FAULT = re.compile(r"^(?P<pod>[^=]+)=(?P<fault>[^@]+)@(?P<at>[0-9]+(\.[0-9]*)?)$")


@dataclass(frozen=True, slots=True)
class ScriptedFault:
    """``POD=FAULT@SECONDS``: POD is a pod name or a slot number (0 = first pod)."""

    pod: str
    fault: Fault
    at: float

    @classmethod
    def parse(cls, text: str) -> ScriptedFault:
        m = _FAULT.match(text.strip())
        if not m:
            raise ValueError(f"--fault {text!r}: expected POD=FAULT@SECONDS, "
                             "e.g. 0=udp-drop@10 (slot 0 loses UDP 10 s after start)")
        try:
            fault = Fault.parse(m["fault"])
        except ValueError as exc:
            raise ValueError(f"--fault {text!r}: {exc}") from None
        return cls(m["pod"].strip(), fault, float(m["at"]))


def demo_settings(settings: Settings, environ: dict[str, str] | None = None) -> Settings:
    """The settings, with the demo's faster defaults where the environment is silent."""
    env = os.environ if environ is None else environ
    changes = {k: v for k, v in DEMO_DEFAULTS.items() if env_name(k) not in env}
    return dataclasses.replace(settings, **changes)


def render(service: Any, started: float, remediation: dict[str, Any] | None = None,
           slots: Callable[[str], int | None] | None = None) -> str:
    """A compact table of targets, the diagnosis and remediation, for a terminal.

    HEALTH names why a pod is not judged (``terminating``, ``not_ready``,
    ``too_young``); FAIL% is the failure share of the window and SURE% the
    share we are sure of (the confidence bound that decides: unhealthy once it
    reaches COREDNSPROBE_FAILURE_RATIO); SLOT is the slot ``--fault`` names.
    """
    head, rows = render_state(service, started, slots)
    lines = [head]
    if remediation is not None:
        lines.append(rows[0])
        lines.append("  " + remediation_line(remediation))
        rows = rows[1:]
    return "\n".join(lines + rows) + "\n"


def render_state(service: Any, started: float,
                 slots: Callable[[str], int | None] | None = None) -> tuple[str, list[str]]:
    """The round's first line, and the lines after it (candidates, the table)."""
    st = service.state
    d = st.diagnosis
    head = (f"t={time.monotonic() - started:5.1f}s round {st.rounds:<4} diagnosis: "
            f"{d.state.value} — {d.reason}")
    lines = ["  restart candidates: " + (", ".join(t.name for t in d.candidates) or "none")]
    evidence = getattr(d, "evidence", None)
    lines += [f"  health endpoints of {p.name}: {p.kubelet_view}"
              for p in (evidence.unhealthy if evidence else ()) if p.endpoints]
    settings = getattr(service, "settings", None)
    least = settings.min_samples if settings is not None else 1
    rows = [("SLOT", "TARGET", "ADDRESS", "HEALTH", "FAIL%", "SURE%", "RTT ms", "LAST")]
    for t in st.targets.targets:
        h = st.healths.get(t.key)
        last = list(st.last.get(t.key, ()))
        rtts = [r.rtt_seconds for r in last if r.rtt_seconds is not None and r.ok]
        outcome = last[-1].outcome.value if last else "-"
        if last and last[-1].udp_only:
            outcome += " (udp only)"
        pod = t.kind is TargetKind.POD
        name = t.name if pod else "service (ClusterIP)"
        slot = slots(t.name) if slots is not None and pod else None
        state = h.state.value if h else HealthState.UNKNOWN.value
        if h is not None and h.state is HealthState.GRACE and h.grace_reason:
            state = h.grace_reason
        ratio = f"{100 * h.ratio:.0f}%" if h and h.samples else "-"
        sure = f"{100 * decisive_bound(h, least):.0f}%" if h and h.samples else "-"
        rtt = f"{1000 * rtts[-1]:.2f}" if rtts else "-"
        rows.append(("-" if slot is None else str(slot), name, t.endpoint, state, ratio, sure,
                     rtt, outcome))
    lines += table(rows, right={0, 4, 5, 6}, min_widths=(4, 27, 21, 11, 5, 5, 6), indent="  ")
    return head, lines


def decisive_bound(h: Health, min_samples: int = 1) -> float:
    """The failure share we are sure of, as the tracker judges: the larger of the
    window's bound (95%) and each check's own (99%) once it has enough outcomes."""
    bounds = [failure_lower_bound(h.failures, h.samples)]
    bounds += [failure_lower_bound(c.failures, c.samples, Z_CHECK) for c in h.checks
               if c.samples >= min_samples]
    return max(bounds)


def validate(pods: int, faults: list[ScriptedFault], duration: float | None) -> str:
    """Why these demo arguments cannot run, or "" when they can."""
    from corednsprobe.sandbox.inprocess import POD_ADDRESSES

    most = POD_ADDRESSES // 2
    if pods < 1:
        return "--pods must be at least 1"
    if pods > most:
        return (f"--pods {pods}: at most {most} (the sandbox has {POD_ADDRESSES} pod addresses "
                "and keeps half of them for replacements)")
    if duration is not None and not duration > 0:
        return f"--duration {duration:g}: expected a number of seconds greater than 0"
    for f in faults:
        if f.pod.isdigit() and int(f.pod) >= pods:
            return (f"--fault {_describe(f)}: no slot {f.pod} with --pods {pods} "
                    f"(slots are 0 to {pods - 1})")
    return ""


@dataclass
class Story:
    """What the demo saw, for the summary at its end."""

    started: float
    faults: list[tuple[float, str, str]] = field(default_factory=list)  # (t, spec, pod)
    verdicts: dict[str, int] = field(default_factory=dict)  # diagnosis -> rounds
    restarts: dict[tuple[str, str], str] = field(default_factory=dict)  # (at, pod) -> said
    detected: float | None = None  # the first round a faulted pod was judged unhealthy
    repaired: float | None = None  # the first recovery remediation reported
    recoveries: set[tuple[str, str]] = field(default_factory=set)

    def now(self) -> float:
        return time.monotonic() - self.started

    def saw_round(self, service: Any) -> None:
        st = service.state
        key = st.diagnosis.state.value
        self.verdicts[key] = self.verdicts.get(key, 0) + 1
        faulted = {pod for _, spec, pod in self.faults if not spec.endswith("=none")}
        if self.detected is None and any(
                h.state is HealthState.UNHEALTHY and h.target.name in faulted
                for h in st.healths.values()):
            self.detected = self.now()

    def saw_remediation(self, status: dict[str, Any] | None) -> list[str]:
        """New restarts and recoveries in ``status``; the lines that announce recoveries."""
        said: list[str] = []
        for a in ((status or {}).get("budget") or {}).get("last_actions") or ():
            if a.get("action") in ("evict", "delete"):
                self.restarts[(a["at"], a["pod"])] = f"{a['action']} {a['pod']} → {a['result']}"
        for r in (status or {}).get("recoveries") or ():
            if (r["restarted_at"], r["pod"]) in self.recoveries:
                continue
            self.recoveries.add((r["restarted_at"], r["pod"]))
            if self.repaired is None:
                self.repaired = self.now()
            steps = ", ".join(f"{k.removesuffix('_seconds')} {r[k]:g}s" for k in
                              ("detect_seconds", "act_seconds", "recover_seconds")
                              if r.get(k) is not None)
            instead = f" (replacement {', '.join(r['replacement'])})" if r["replacement"] else ""
            said.append(f">>> recovered: after {r['action']} {r['pod']} every pod of "
                        f"{r['workload'] or 'the workload'} is judged healthy{instead}; {steps}")
        return said

    def summary(self) -> str:
        first = self.faults[0][0] if self.faults else None
        lines = [f"summary after {self.now():.1f}s:",
                 f"  faults injected: {len(self.faults)}" + "".join(
                     f"\n    t={t:5.1f}s {spec} ({pod})" for t, spec, pod in self.faults),
                 "  diagnoses: " + (", ".join(
                     f"{k} {n} times" for k, n in self.verdicts.items()) or "none"),
                 f"  restarts: {len(self.restarts)}" + "".join(
                     f"\n    {said}" for said in self.restarts.values())]
        lines.append("  time to detect: " + (
            f"{self.detected - first:.1f}s (fault to unhealthy verdict)"
            if first is not None and self.detected is not None else "-"))
        lines.append("  time to repair: " + (
            f"{self.repaired - first:.1f}s (fault to recovery after the restart)"
            if first is not None and self.repaired is not None else "-"))
        return "\n".join(lines) + "\n"


async def run_demo(settings: Settings, pods: int, faults: list[ScriptedFault],
                   duration: float | None = None, out: TextIO = sys.stdout) -> None:
    """Run sandbox and service together until SIGINT/SIGTERM (or ``duration``);
    print a summary of what happened when it stops."""
    from corednsprobe.kube.access import connect
    from corednsprobe.sandbox.cluster import Sandbox, SandboxConfig
    from corednsprobe.sandbox.controllers import Timings, slot_of
    from corednsprobe.sandbox.inprocess import InProcessBackend
    from corednsprobe.service.app import serve

    backend = InProcessBackend(domain=settings.cluster_domain)
    config = SandboxConfig(replicas=pods, domain=settings.cluster_domain,
                           termination_grace_seconds=5,
                           timings=Timings(readiness_period=0.5, resync_period=2.0))
    started = time.monotonic()
    story = Story(started)
    stop = asyncio.Event()
    pending: deque[tuple[str, list[str]]] = deque()
    async with Sandbox(backend, config) as sandbox:
        await sandbox.wait_ready()

        def slot(name: str) -> int | None:
            return next((slot_of(p) for p in sandbox.dns_pods()
                         if p["metadata"]["name"] == name), None)

        with tempfile.TemporaryDirectory(prefix="corednsprobe-demo-") as tmp:
            kubeconfig = sandbox.write_kubeconfig(Path(tmp) / "kubeconfig")
            access = await connect(str(kubeconfig))

            def listening(_service: Any, port: int) -> None:
                host = settings.listen_address(in_cluster=False)[0]
                out.write(
                    f"sandbox API:  {sandbox.url}  (kubeconfig: {kubeconfig})\n"
                    f"metrics:      http://{host}:{port}/metrics\n"
                    f"status:       http://{host}:{port}/status\n"
                    f"remediation:  {settings.remediation}\n"
                    f"faults:       {', '.join(_describe(f) for f in faults) or 'none'}\n"
                    f"SURE%:        the failure share we are sure of; a pod is unhealthy "
                    f"once it reaches {100 * settings.failure_ratio:g}%\n"
                    "Ctrl-C stops the demo.\n\n")
                out.flush()

            def each_round(service: Any, _remediation: dict[str, Any]) -> None:
                story.saw_round(service)
                pending.append(render_state(service, started, slot))

            def decided(remediation: dict[str, Any] | None) -> None:
                if not pending:
                    return
                head, rest = pending.popleft()
                said = story.saw_remediation(remediation)
                out.write("\n".join([head, rest[0], "  " + remediation_line(remediation),
                                     *rest[1:], *said]) + "\n")
                out.flush()

            try:
                async with asyncio.TaskGroup() as tasks:
                    helpers = [tasks.create_task(_inject(sandbox, f, story, out))
                               for f in faults]
                    if duration is not None:
                        helpers.append(tasks.create_task(_stop_after(stop, duration)))
                    await serve(settings, access.api, stop=stop, on_listening=listening,
                                on_round=each_round, on_decided=decided)
                    for task in helpers:  # faults not yet due when the demo stops
                        task.cancel()
            finally:
                await access.close()
                out.write("\n" + story.summary())
                out.flush()


def remediation_line(r: dict[str, Any] | None) -> str:
    """What remediation decided on this round's verdict (``{}``: remediation off,
    None: that verdict was skipped for a newer one)."""
    if r is None:
        return "remediation: no decision on this round (a newer round came first)"
    if not r:
        return "remediation: off"
    decision = r.get("decision") or {}
    budget = r.get("budget") or {}
    last = (budget.get("last_actions") or [None])[-1]
    said = f"remediation ({r.get('mode')}): {decision.get('verdict')}"
    if decision.get("detail"):
        said += f" — {decision['detail']}"
    if last:
        said += f"; last: {last['action']} {last['pod']} → {last['result']}"
        if last.get("recovered_at"):
            said += ", recovered"
    return said


def _describe(f: ScriptedFault) -> str:
    return f"{f.pod}={f.fault}@{f.at:g}s"


async def _stop_after(stop: asyncio.Event, seconds: float) -> None:
    await asyncio.sleep(seconds)
    stop.set()


async def _inject(sandbox: Any, fault: ScriptedFault, story: Story, out: TextIO) -> None:
    await asyncio.sleep(max(0.0, fault.at - story.now()))
    name = fault.pod
    if fault.pod.isdigit():
        pod = sandbox.pod_for_slot(int(fault.pod))
        if pod is None:
            log.warning("demo_fault_skipped", slot=fault.pod, reason="no pod in that slot")
            return
        name = pod["metadata"]["name"]
    try:
        await sandbox.set_pod_fault(name, fault.fault)
    except KeyError:
        log.warning("demo_fault_skipped", pod=name, reason="no such pod")
        return
    story.faults.append((story.now(), _describe(fault).rsplit("@", 1)[0], name))
    verb = "healed" if fault.fault.kind is FaultKind.NONE else f"now has fault {fault.fault}"
    out.write(f">>> pod {name} {verb}\n")
    out.flush()
