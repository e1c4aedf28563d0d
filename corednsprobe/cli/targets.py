"""`corednsprobe targets`: what would be probed, as the API says it, now or as it changes.

Owns: opening the cluster for a command (credentials, reachability, read
permissions — each failure one clear paragraph and exit 3) and rendering
TargetSets for people (a table) and programs (JSON).
Never does: probe.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TextIO

import aiohttp

from corednsprobe import logs
from corednsprobe.backoff import Backoff
from corednsprobe.cli.render import table
from corednsprobe.config import Settings
from corednsprobe.kube.access import (
    Access,
    ClusterAccessError,
    ClusterBusy,
    check_permissions,
    connect,
    explain_missing,
    read_permissions,
)
from corednsprobe.kube.client import ApiError, request
from corednsprobe.kube.view import ClusterView, endpointslices_served
from corednsprobe.model import ClusterState, Target, TargetSet

DNS_PORT = 53
DNS_PORT_NAMES = frozenset({"dns", "dns-tcp", "dns-udp"})
DNS_APP_LABELS = frozenset({"kube-dns", "coredns"})
EXIT_NO_SERVICE = 1

log = logs.get(__name__)
START_PATIENCE = 120.0  # seconds `run` keeps asking a busy API server before exiting 3
START_BACKOFF = Backoff(base=1.0, cap=15.0)


@dataclass(frozen=True, slots=True)
class ClusterArgs:
    kubeconfig: str | None = None
    context: str | None = None


async def open_cluster(args: ClusterArgs, settings: Settings) -> Access:
    """Connect and check read permissions; raise ClusterAccessError (exit 3) if not.

    The endpoint permissions asked for are those of what the cluster serves:
    EndpointSlices, or legacy Endpoints where discovery.k8s.io/v1 is absent.
    """
    access = await connect(args.kubeconfig, args.context)
    try:
        legacy = not await endpointslices_served(access.api)
        report = await check_permissions(access.api, read_permissions(settings.namespace,
                                                                      legacy))
    except ApiError as exc:
        await access.close()
        if exc.status == 429 or exc.status >= 500:
            raise ClusterBusy(f"reached {access.describe()}, but it answered "
                              f"{exc.status} {exc.reason}: {exc.message}.") from None
        raise
    except Exception:
        await access.close()
        raise
    if not report.ok:
        await access.close()
        raise ClusterAccessError(explain_missing(report, access.describe()))
    return access


async def open_cluster_patiently(args: ClusterArgs, settings: Settings,
                                 patience: float = START_PATIENCE) -> Access:
    """``open_cluster`` for the long-running ``run``.

    A busy API server (5xx, 429) says nothing about our address, credentials or
    permissions, and a restarting control plane answers that way for a while:
    ask again with backoff, logging each wait, for up to ``patience`` seconds.
    Every other refusal fails at once, as it does for the one-shot commands.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + patience
    failures = 0
    while True:
        try:
            return await open_cluster(args, settings)
        except ClusterBusy as exc:
            failures += 1
            wait = START_BACKOFF.delay(failures)
            if loop.time() + wait > deadline:
                raise
            log.warning("cluster_busy", error=str(exc), attempt=failures,
                        retry_in=round(wait, 2))
            await asyncio.sleep(wait)


def targetset_json(ts: TargetSet) -> dict[str, Any]:
    return {
        "state": ts.state.value,
        "generation": ts.generation,
        "expected": sorted(ts.expected),
        "pods": [_target_json(t) for t in ts.pods],
        "services": [_target_json(t) for t in ts.services],
    }


def _target_json(t: Target) -> dict[str, Any]:
    out: dict[str, Any] = {"kind": t.kind.value, "name": t.name, "address": t.address,
                           "port": t.port}
    if t.pod is not None:
        out.update(pod=t.pod.name, uid=t.pod.uid, node=t.pod.node, ready=t.pod.ready,
                   serving=t.pod.serving, terminating=t.pod.terminating,
                   created_at=t.pod.created_at)
    return out


def _age(created: float | None, now: float) -> str:
    if created is None:
        return "-"
    s = max(0, int(now - created))
    return f"{s}s" if s < 120 else f"{s // 60}m" if s < 7200 else f"{s // 3600}h"


def render_table(ts: TargetSet, now: float) -> str:
    head = ("KIND", "NAME", "ADDRESS", "PORT", "NODE", "READY", "SERVING", "TERMINATING", "AGE")
    rows: list[tuple[str, ...]] = [head]
    for t in ts.targets:
        p = t.pod
        rows.append((t.kind.value, t.name, t.address, str(t.port), p.node if p else "-",
                     _yn(p.ready) if p else "-", _yn(p.serving) if p else "-",
                     _yn(p.terminating) if p else "-", _age(p.created_at if p else None, now)))
    lines = table(rows)
    expected = ",".join(sorted(ts.expected)) or "unknown"
    lines.append(f"state: {ts.state.value}; kubernetes.default answers: {expected}")
    return "\n".join(lines) + "\n"


def _yn(flag: bool) -> str:
    return "yes" if flag else "no"


def summary_line(ts: TargetSet) -> str:
    pods = " ".join(f"{t.name}={t.address}{'(terminating)' if t.pod and t.pod.terminating else ''}"
                    f"{'' if not t.pod or t.pod.ready or t.pod.terminating else '(not-ready)'}"
                    for t in ts.pods)
    svc = ",".join(t.address for t in ts.services) or "-"
    return f"#{ts.generation} state={ts.state.value} service={svc} pods: {pods or '-'}"


def _pod_state(t: Target) -> str:
    if t.pod is None:
        return "ready"
    return "terminating" if t.pod.terminating else "ready" if t.pod.ready else "not-ready"


def changes(old: TargetSet, new: TargetSet) -> list[str]:
    """What differs from ``old`` to ``new``, one phrase per change, for --watch:
    ``state=…``, ``service=…``, ``expected=…``, ``+ pod NAME IP STATE`` (added),
    ``- pod NAME IP`` (gone), ``~ pod NAME IP STATE`` (ready, not-ready, terminating)."""
    out: list[str] = []
    if old.state != new.state:
        out.append(f"state={new.state.value}")
    if [t.address for t in old.services] != [t.address for t in new.services]:
        out.append(f"service={','.join(t.address for t in new.services) or '-'}")
    if old.expected != new.expected:
        out.append(f"expected={','.join(sorted(new.expected)) or '-'}")
    before = {(t.name, t.address): t for t in old.pods}
    after = {(t.name, t.address): t for t in new.pods}
    for key in sorted(before.keys() - after.keys()):
        out.append(f"- pod {key[0]} {key[1]}")
    for key in sorted(after):
        state = _pod_state(after[key])
        if key not in before:
            out.append(f"+ pod {key[0]} {key[1]} {state}")
        elif _pod_state(before[key]) != state:
            out.append(f"~ pod {key[0]} {key[1]} {state}")
    return out


def _stamp(now: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(now))


FIRST_LIST_WITHIN = 30.0  # seconds


async def _first(view: ClusterView, access: Access) -> TargetSet:
    """The first TargetSet, or exit 3 if the API never completes a list."""
    try:
        async with asyncio.timeout(FIRST_LIST_WITHIN):
            return await view.changed(0)
    except TimeoutError:
        raise ClusterAccessError(
            f"{access.describe()} accepted the credentials and permissions, but did not "
            f"complete a list of {', '.join(view.unsynced())} within {FIRST_LIST_WITHIN:g} s "
            "(see the warnings above for the errors). Check the API server's health."
        ) from None


def looks_like_dns(service: dict[str, Any]) -> bool:
    """A Service that serves port 53, names a port dns, or carries k8s-app=kube-dns/coredns."""
    spec = service.get("spec") or {}
    labels = (service.get("metadata") or {}).get("labels") or {}
    selector = spec.get("selector") or {}
    if {labels.get("k8s-app"), selector.get("k8s-app")} & DNS_APP_LABELS:
        return True
    return any(p.get("port") == DNS_PORT or p.get("targetPort") == DNS_PORT
               or p.get("name") in DNS_PORT_NAMES for p in spec.get("ports") or ())


def _describe_service(service: dict[str, Any]) -> str:
    spec = service.get("spec") or {}
    ports = ",".join(f"{p.get('port')}/{p.get('protocol') or 'TCP'}"
                     for p in spec.get("ports") or ())
    return f"{(service.get('metadata') or {}).get('name')} ({spec.get('clusterIP')}, {ports})"


async def list_services(api: Any, namespace: str) -> list[dict[str, Any]]:
    """The Services of ``namespace`` as the API lists them (one request); none when the
    list fails (the explanation then says so by listing nothing)."""
    try:
        listed = await request(api, "GET", f"/api/v1/namespaces/{namespace}/services")
    except (ApiError, aiohttp.ClientError, TimeoutError, ValueError):
        return []
    return [item for item in listed.get("items") or [] if isinstance(item, dict)]


def explain_no_service(namespace: str, service: str, found: list[dict[str, Any]]) -> str:
    """What a wrong COREDNSPROBE_SERVICE looks like to people: what was looked for,
    what DNS-looking Services there are instead, and the setting that names it."""
    dns = [s for s in found if looks_like_dns(s)]
    text = (f"corednsprobe: no Service {service!r} in namespace {namespace!r}, so there is "
            "nothing to probe. ")
    if dns:
        names = "; ".join(_describe_service(s) for s in dns)
        first = (dns[0].get("metadata") or {}).get("name")
        text += (f"DNS-looking Services in {namespace}: {names}. Set COREDNSPROBE_SERVICE to "
                 f"the CoreDNS Service's name (e.g. COREDNSPROBE_SERVICE={first}).")
    else:
        text += (f"No Service in {namespace} serves port 53 ({len(found)} Services listed). "
                 "Set COREDNSPROBE_SERVICE to the CoreDNS Service's name and "
                 "COREDNSPROBE_NAMESPACE (or -n) to its namespace.")
    return text


async def run_targets(args: ClusterArgs, settings: Settings, *, watch: bool, as_json: bool,
                      out: TextIO = sys.stdout, err: TextIO = sys.stderr,
                      planned: bool = False) -> int:
    """Print the targets; 1 when the Service is missing (one-shot), 0 otherwise.

    ``planned``: print them as the reach strategy (``settings.reach``, chosen as
    ``run`` chooses it) would probe them, and say which strategy that is."""
    access = await open_cluster(args, settings)
    view = ClusterView(access.api, namespace=settings.namespace, service=settings.service)
    code = 0
    plan: Callable[[TargetSet], TargetSet] = _as_published
    try:
        if planned:
            from corednsprobe.reach.choose import choose

            chosen = await choose(settings, access.api, in_cluster=access.in_cluster)
            await chosen.reach.aclose()  # only its plan is wanted: nothing was started
            plan = chosen.reach.plan
            blind = ", ".join(chosen.reach.blind_to)
            err.write(f"reach: {chosen.reach.strategy.value} ({chosen.reason})"
                      + (f"; blind to {blind}, and does not probe what it leaves out"
                         if blind else "") + "\n")
            err.flush()
        # the view's task lives in the group: if the watch fails, so does the command
        async with asyncio.TaskGroup() as tasks:
            runner = tasks.create_task(view.run(), name="cluster-view")
            first = await _first(view, access)
            if first.state is ClusterState.NO_SERVICE:
                found = await list_services(access.api, settings.namespace)
                err.write(explain_no_service(settings.namespace, settings.service, found)
                          + "\n")
                err.flush()
                code = 0 if watch else EXIT_NO_SERVICE
            if watch or as_json or not code:
                await _print(view, first, watch=watch, as_json=as_json, out=out, plan=plan)
            runner.cancel()
    except BaseExceptionGroup as group:
        if len(group.exceptions) == 1 and isinstance(group.exceptions[0], ClusterAccessError):
            raise group.exceptions[0] from None
        raise
    finally:
        await access.close()
    return code


def _as_published(ts: TargetSet) -> TargetSet:
    return ts


async def _print(view: ClusterView, ts: TargetSet, *, watch: bool, as_json: bool,
                 out: TextIO, plan: Callable[[TargetSet], TargetSet] = _as_published) -> None:
    """The TargetSet once; with ``watch``, then each change until cancelled, every
    line stamped with the time: the whole set first, then only what changed."""
    previous: TargetSet | None = None
    while True:
        ts = plan(ts)
        now = time.time()
        if as_json:
            document = targetset_json(ts)
            if watch:
                document["time"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now))
            out.write(json.dumps(document, indent=None if watch else 2) + "\n")
        elif watch and previous is None:
            out.write(f"{_stamp(now)} {summary_line(ts)}\n")
        elif watch and previous is not None:
            for change in changes(previous, ts):
                out.write(f"{_stamp(now)} #{ts.generation} {change}\n")
        else:
            out.write(render_table(ts, now))
        out.flush()
        if not watch:
            return
        previous = ts
        ts = await view.changed(ts.generation)
