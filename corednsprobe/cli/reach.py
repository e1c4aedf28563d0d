"""`corednsprobe reach` and `corednsprobe check --cluster`: how this place reaches the
DNS pods, and one check of every pod and the Service through that way.

Owns: the `reach` command (each strategy's assessment, auto's pick and why each other
one is out, as a table or JSON, without probing for long) and the one-shot cluster
check (the chosen strategy's plan of the current targets, each asked ``--count``
times, rendered as `check` renders).
Never does: exit the process (main.py maps the outcome to an exit code).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import sys
from typing import Any, TextIO

from corednsprobe.cli.check import Streamer, as_dict, build_check, per_server, summary
from corednsprobe.cli.check import render_summary as check_summary
from corednsprobe.cli.render import table
from corednsprobe.cli.targets import ClusterArgs, explain_no_service, list_services, open_cluster
from corednsprobe.config import Settings
from corednsprobe.model import ClusterState, ProbeResult
from corednsprobe.reach.choose import choose, facts, first_targets

EXIT_NO_SERVICE = 1


def with_reach(settings: Settings, args: argparse.Namespace) -> Settings:
    """``--reach`` over COREDNSPROBE_REACH."""
    wanted = getattr(args, "reach", None)
    return dataclasses.replace(settings, reach=wanted) if wanted else settings


async def run_reach(cluster: ClusterArgs, settings: Settings, *, as_json: bool,
                    out: TextIO = sys.stdout) -> bool:
    """Print what each strategy needs and found here; True when at least one can work."""
    access = await open_cluster(cluster, settings)
    try:
        found = await facts(access.api, settings, in_cluster=access.in_cluster)
    finally:
        await access.close()
    if as_json:
        doc = {"api": access.url, "credentials": access.source,
               "in_cluster": access.in_cluster, "configured": settings.reach, **found.as_dict()}
        out.write(json.dumps(doc, indent=2) + "\n")
        return found.pick is not None
    rows = [("STRATEGY", "USABLE", "REASON")]
    rows += [(a.strategy.value, "yes" if a.usable else "no", a.reason)
             for a in found.assessments]
    out.write("\n".join(table(rows)) + "\n")
    if found.pick is None:
        out.write("auto: none of them can work here; what each needs:\n")
        for a in found.assessments:
            out.write(f"  {a.strategy.value}: {a.needs}\n")
    else:
        out.write(f"auto would pick: {found.pick.value} (decided in {found.seconds:.2f} s)\n")
    return found.pick is not None


async def run_cluster_check(args: argparse.Namespace, settings: Settings,
                            out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    """Every pod and the Service ``--count`` times through the chosen strategy; 0 when
    every probe was ok, 1 otherwise (or when the Service is missing)."""
    access = await open_cluster(ClusterArgs(args.kubeconfig, args.context), settings)
    try:
        ts = await first_targets(access.api, settings)
        if ts.state is ClusterState.NO_SERVICE:
            found = await list_services(access.api, settings.namespace)
            err.write(explain_no_service(settings.namespace, settings.service, found) + "\n")
            return EXIT_NO_SERVICE
        chosen = await choose(settings, access.api, in_cluster=access.in_cluster)
        reach = chosen.reach
        try:
            results = await _probe(reach, args, settings, ts, out, err, chosen.reason)
        finally:
            await reach.aclose()
    finally:
        await access.close()
    if args.json:
        doc: dict[str, Any] = {
            "reach": {"strategy": reach.strategy.value, "reason": chosen.reason,
                      "blind_to": list(reach.blind_to)},
            "results": [{**as_dict(r), "target": r.target.name, "kind": r.target.kind.value,
                         "reach": r.reach} for r in results],
            "summary": summary(results),
            "servers": per_server(results)}
        out.write(json.dumps(doc, indent=2) + "\n")
    else:
        out.write(check_summary(results))
    return 0 if results and all(r.ok for r in results) else 1


async def _probe(reach: Any, args: argparse.Namespace, settings: Settings, published: Any,
                 out: TextIO, err: TextIO, reason: str) -> list[ProbeResult]:
    ts = reach.plan(published)
    check = build_check(args, settings)
    if not args.expect and ts.expected and check.qtype == "A":
        check = dataclasses.replace(check, expect_addresses=frozenset(
            a for a in ts.expected if ":" not in a) or None)
    blind = ", ".join(reach.blind_to)
    err.write(f"reach: {reach.strategy.value} ({reason})"
              + (f"; blind to {blind}" if blind else "") + "\n")
    err.flush()
    targets = list(ts.targets)
    stream = None if args.json else Streamer(targets, check, out)
    background = asyncio.create_task(reach.run())
    results: list[ProbeResult] = []
    try:
        for number in range(args.count):
            if number and args.interval:
                await asyncio.sleep(args.interval)
            for result in await asyncio.gather(*(reach.probe(t, check) for t in targets)):
                results.append(result)
                if stream is not None:
                    stream.row(result)
            if background.done():
                background.result()  # the strategy was lost: say why (NoReach/ReachLost)
    finally:
        background.cancel()
        await asyncio.gather(background, return_exceptions=True)
    return results
