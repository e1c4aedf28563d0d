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
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from corednsprobe import logs
from corednsprobe.cli.render import table
from corednsprobe.config import Settings, env_name
from corednsprobe.model import HealthState, TargetKind
from corednsprobe.sandbox.backend import Fault, FaultKind

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
        spec = m["fault"].strip().lower()
        spec = spec.removeprefix("udp-") if spec.startswith("udp-") else spec
        try:
            fault = Fault.parse(spec)
        except ValueError as exc:
            raise ValueError(f"--fault {text!r}: {exc}") from None
        return cls(m["pod"].strip(), fault, float(m["at"]))


def demo_settings(settings: Settings, environ: dict[str, str] | None = None) -> Settings:
    """The settings, with the demo's faster defaults where the environment is silent."""
    env = os.environ if environ is None else environ
    changes = {k: v for k, v in DEMO_DEFAULTS.items() if env_name(k) not in env}
    return dataclasses.replace(settings, **changes)


def render(service: Any, started: float, remediation: dict[str, Any] | None = None) -> str:
    """A compact table of targets, the diagnosis and remediation, for a terminal."""
    st = service.state
    d = st.diagnosis
    lines = [f"t={time.monotonic() - started:5.1f}s round {st.rounds:<4} diagnosis: "
             f"{d.state.value} — {d.reason}"]
    if d.candidates:
        lines.append("  restart candidates: " + ", ".join(t.name for t in d.candidates))
    if remediation:
        lines.append("  " + _remediation_line(remediation))
    rows = [("TARGET", "ADDRESS", "HEALTH", "FAIL%", "RTT ms", "LAST")]
    for t in st.targets.targets:
        h = st.healths.get(t.key)
        last = list(st.last.get(t.key, ()))
        rtts = [r.rtt_seconds for r in last if r.rtt_seconds is not None and r.ok]
        outcome = last[-1].outcome.value if last else "-"
        if last and last[-1].udp_only:
            outcome += " (udp only)"
        name = t.name if t.kind is TargetKind.POD else "service (ClusterIP)"
        state = h.state.value if h else HealthState.UNKNOWN.value
        ratio = f"{100 * h.ratio:.0f}%" if h and h.samples else "-"
        rtt = f"{1000 * rtts[-1]:.2f}" if rtts else "-"
        rows.append((name, t.endpoint, state, ratio, rtt, outcome))
    lines += table(rows, right={3, 4}, min_widths=(27, 21, 9, 6, 6), indent="  ")
    return "\n".join(lines) + "\n"


async def run_demo(settings: Settings, pods: int, faults: list[ScriptedFault],
                   duration: float | None = None, out: TextIO = sys.stdout) -> None:
    """Run sandbox and service together until SIGINT/SIGTERM (or ``duration``)."""
    from corednsprobe.kube.access import connect
    from corednsprobe.sandbox.cluster import Sandbox, SandboxConfig
    from corednsprobe.sandbox.controllers import Timings
    from corednsprobe.sandbox.inprocess import InProcessBackend
    from corednsprobe.service.app import serve

    backend = InProcessBackend(domain=settings.cluster_domain)
    config = SandboxConfig(replicas=pods, domain=settings.cluster_domain,
                           termination_grace_seconds=5,
                           timings=Timings(readiness_period=0.5, resync_period=2.0))
    started = time.monotonic()
    stop = asyncio.Event()
    async with Sandbox(backend, config) as sandbox:
        await sandbox.wait_ready()
        with tempfile.TemporaryDirectory(prefix="corednsprobe-demo-") as tmp:
            kubeconfig = sandbox.write_kubeconfig(Path(tmp) / "kubeconfig")
            access = await connect(str(kubeconfig))

            def listening(_service: Any, port: int) -> None:
                host = settings.listen_address(in_cluster=False)[0]
                out.write(
                    f"sandbox API:  {sandbox.url}  (kubeconfig: {kubeconfig})\n"
                    f"metrics:      http://{host}:{port}/metrics\n"
                    f"status:       http://{host}:{port}/status\n"
                    f"faults:       {', '.join(_describe(f) for f in faults) or 'none'}\n"
                    "Ctrl-C stops the demo.\n\n")
                out.flush()

            def each_round(service: Any, remediation: dict[str, Any]) -> None:
                out.write(render(service, started, remediation))
                out.flush()

            try:
                async with asyncio.TaskGroup() as tasks:
                    helpers = [tasks.create_task(_inject(sandbox, f, started, out))
                               for f in faults]
                    if duration is not None:
                        helpers.append(tasks.create_task(_stop_after(stop, duration)))
                    await serve(settings, access.api, stop=stop, on_listening=listening,
                                on_round=each_round)
                    for task in helpers:  # faults not yet due when the demo stops
                        task.cancel()
            finally:
                await access.close()


def _remediation_line(r: dict[str, Any]) -> str:
    decision = r.get("decision") or {}
    budget = r.get("budget") or {}
    last = (budget.get("last_actions") or [None])[-1]
    said = f"remediation ({r.get('mode')}): {decision.get('verdict')}"
    if decision.get("detail"):
        said += f" — {decision['detail']}"
    if last:
        said += f"; last: {last['action']} {last['pod']} → {last['result']}"
    return said


def _describe(f: ScriptedFault) -> str:
    return f"{f.pod}={f.fault}@{f.at:g}s"


async def _stop_after(stop: asyncio.Event, seconds: float) -> None:
    await asyncio.sleep(seconds)
    stop.set()


async def _inject(sandbox: Any, fault: ScriptedFault, started: float, out: TextIO) -> None:
    await asyncio.sleep(max(0.0, fault.at - (time.monotonic() - started)))
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
    verb = "healed" if fault.fault.kind is FaultKind.NONE else f"now has fault {fault.fault}"
    out.write(f">>> pod {name} {verb}\n")
    out.flush()
