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
from dataclasses import dataclass
from typing import Any, TextIO

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
from corednsprobe.kube.client import ApiError
from corednsprobe.kube.view import ClusterView, endpointslices_served
from corednsprobe.model import Target, TargetSet

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


async def run_targets(args: ClusterArgs, settings: Settings, *, watch: bool, as_json: bool,
                      out: TextIO = sys.stdout) -> int:
    access = await open_cluster(args, settings)
    view = ClusterView(access.api, namespace=settings.namespace, service=settings.service)
    try:
        # the view's task lives in the group: if the watch fails, so does the command
        async with asyncio.TaskGroup() as tasks:
            runner = tasks.create_task(view.run(), name="cluster-view")
            await _print(view, access, watch=watch, as_json=as_json, out=out)
            runner.cancel()
    except BaseExceptionGroup as group:
        if len(group.exceptions) == 1 and isinstance(group.exceptions[0], ClusterAccessError):
            raise group.exceptions[0] from None
        raise
    finally:
        await access.close()
    return 0


async def _print(view: ClusterView, access: Access, *, watch: bool, as_json: bool,
                 out: TextIO) -> None:
    """The TargetSet once, or every new one until cancelled with ``watch``."""
    ts = await _first(view, access)
    while True:
        if as_json:
            out.write(json.dumps(targetset_json(ts), indent=None if watch else 2) + "\n")
        elif watch:
            out.write(summary_line(ts) + "\n")
        else:
            out.write(render_table(ts, time.time()))
        out.flush()
        if not watch:
            return
        ts = await view.changed(ts.generation)
