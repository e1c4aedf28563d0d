"""`corednsprobe check`: one-shot probes of given servers, printed as a table or JSON.

Owns: the command's options, turning them into Targets and a Check, running the
probes on uvloop, and rendering the results.
Never does: exit the process or pick exit codes (main.py maps "all ok" to 0/1);
bad usage is reported through argparse, which exits 2 with a message.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import math
import sys
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any, TextIO

from corednsprobe.addr import PortError, split_host_port
from corednsprobe.cli.render import table
from corednsprobe.config import Settings
from corednsprobe.model import Check, Outcome, ProbeResult, Target, TargetKind
from corednsprobe.probe import wire

QUERY_TYPES = sorted(name for name in wire.TYPES if name != "OPT")


def parse_server(text: str) -> tuple[str, int]:
    """``127.0.0.1``, ``127.0.0.1:5353``, ``[::1]:53``, ``::1`` → (address, port)."""
    try:
        host, number = split_host_port(text, default_port=53)
        address = ipaddress.ip_address(host)
    except PortError:
        raise argparse.ArgumentTypeError(f"{text!r}: port must be 1-65535") from None
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected an IP address with an optional port, "
            "e.g. 127.0.0.1:53 or [::1]:53") from None
    if not 0 < number < 65536:
        raise argparse.ArgumentTypeError(f"{text!r}: port must be 1-65535")
    return str(address), number


def parse_ip(text: str) -> str:
    try:
        return str(ipaddress.ip_address(text.strip()))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an IP address") from None


def parse_name(text: str) -> str:
    if not text.strip():
        raise argparse.ArgumentTypeError("an empty name; the root is '.'")
    try:
        wire.encode_name(text)
    except (ValueError, UnicodeError):
        raise argparse.ArgumentTypeError(f"{text!r} is not a DNS name") from None
    return text


def _number(lo: float, hi: float, cast: type[float] | type[int] = float) -> Any:
    def parse(text: str) -> float | int:
        try:
            value = cast(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not math.isfinite(value) or not lo <= value <= hi:
            raise argparse.ArgumentTypeError(f"{text!r} is not between {lo:g} and {hi:g}")
        return value

    return parse


def _search_list(text: str) -> tuple[str, ...]:
    return tuple(parse_name(d.strip()) for d in text.split(",") if d.strip())


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--server", action="append", type=parse_server,
                        metavar="ADDR[:PORT]", help="server to ask; repeatable; IPv6 as [::1]:53")
    parser.add_argument("--cluster", action="store_true",
                        help="instead of --server: every CoreDNS pod and the Service of the "
                        "cluster of the kubeconfig, through the reach strategy (--reach)")
    parser.add_argument("--name", type=parse_name,
                        help="name to ask (default kubernetes.default.svc.<cluster domain>)")
    parser.add_argument("--type", default="A", type=str.upper, choices=QUERY_TYPES,
                        help="query type (default A)")
    parser.add_argument("--expect", action="extend", nargs="+", type=parse_ip, metavar="IP",
                        help="the addresses a right answer holds (default: any answer)")
    parser.add_argument("--expect-rcode", default="NOERROR", type=str.upper,
                        choices=["NOERROR", "NXDOMAIN"], help="NXDOMAIN: pass only on NXDOMAIN")
    view = parser.add_mutually_exclusive_group()
    view.add_argument("--search", type=_search_list, metavar="DOM,DOM",
                      help="search list: resolve --name like a pod's stub resolver (aiodns)")
    view.add_argument("--tcp", action="store_true",
                      help="ask over TCP only (through kubectl port-forward, which carries "
                      "no UDP)")
    parser.add_argument("--ndots", type=_number(0, 15, int), default=None,
                        help="ndots for --search (default 5, as in a pod's resolv.conf)")
    parser.add_argument("--timeout", type=_number(0.01, 30),
                        help="deadline of one probe in seconds (default COREDNSPROBE_TIMEOUT)")
    parser.add_argument("--count", type=_number(1, 100_000, int), default=1,
                        help="probes per server (default 1)")
    parser.add_argument("--interval", type=_number(0, 3600), default=0.0,
                        help="seconds between the probes of --count (default 0)")
    parser.add_argument("--json", action="store_true", help="print one JSON document")


DEFAULT_NDOTS = 5


def check_usage(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Options that mean nothing without another are usage errors (exit 2), not ignored."""
    if args.ndots is not None and args.search is None:
        parser.error("--ndots applies only to --search (a stub resolver's search list); "
                     "add --search DOM,DOM or drop --ndots")
    if bool(args.server) == bool(args.cluster):
        parser.error("give the servers to ask (--server ADDR, repeatable) or --cluster "
                     "(every CoreDNS pod and the Service of the kubeconfig's cluster)")
    if args.cluster and (args.tcp or args.search is not None):
        parser.error("--cluster asks through the reach strategy (--reach port-forward is "
                     "DNS over TCP); --tcp and --search apply to --server only")
    if not args.cluster and any(getattr(args, o, None) for o in
                                ("reach", "kubeconfig", "context", "namespace")):
        parser.error("--reach, --kubeconfig, --context and -n apply to --cluster only")


def build_check(args: argparse.Namespace, settings: Settings) -> Check:
    name = args.name or f"kubernetes.default.svc.{settings.cluster_domain}"
    return Check(
        name="check", qname=name, qtype=args.type,
        expect_addresses=frozenset(args.expect) if args.expect else None,
        expect_rcode=args.expect_rcode, search=args.search or (),
        ndots=DEFAULT_NDOTS if args.ndots is None else args.ndots,
        application_view=args.search is not None,
    )


async def probe_all(targets: Sequence[Target], check: Check, deadline_seconds: float,
                    count: int, interval: float, tcp_only: bool = False,
                    on_result: Callable[[ProbeResult], None] | None = None,
                    ) -> list[ProbeResult]:
    """``count`` rounds; in each, every server is asked at once. ``on_result`` sees
    each result as it completes; the list returned is in round, then server, order."""
    from corednsprobe.probe.engine import Prober

    prober = Prober(deadline_seconds, tcp_only=tcp_only)

    async def one(target: Target) -> ProbeResult:
        result = await prober.probe(target, check)
        if on_result is not None:
            on_result(result)
        return result

    results: list[ProbeResult] = []
    for round_number in range(count):
        if round_number and interval:
            await asyncio.sleep(interval)
        results += await asyncio.gather(*(one(t) for t in targets))
    return results


def run(args: argparse.Namespace, settings: Settings, out: TextIO = sys.stdout) -> bool:
    """Probe, print (a table row per probe as it completes, or JSON at the end), and
    say whether every probe was ok."""
    import uvloop

    check = build_check(args, settings)
    targets = [Target(TargetKind.SERVICE, address, port) for address, port in args.server]
    timeout = args.timeout if args.timeout is not None else settings.timeout
    stream = None if args.json else Streamer(targets, check, out)
    results = uvloop.run(probe_all(targets, check, timeout, args.count, args.interval,
                                   tcp_only=args.tcp,
                                   on_result=stream.row if stream else None))
    out.write(render_json(results) if args.json else render_summary(results))
    return all(r.ok for r in results)


HEADER = ("SERVER", "NAME", "OUTCOME", "RCODE", "RTT_MS", "ANSWERS", "UDP_ONLY", "DETAIL")
ADDRESS_TYPES = frozenset({"A", "AAAA"})


def _cells(r: ProbeResult) -> tuple[str, ...]:
    return (r.target.endpoint, r.qname or r.check.qname, r.outcome.value, r.rcode or "-",
            f"{r.rtt_seconds * 1000:.2f}" if r.rtt_seconds is not None else "-",
            ",".join(r.answers) or "-", "yes" if r.udp_only else "no", r.detail or "")


def _record_lines(r: ProbeResult) -> list[str]:
    """The answer section as dig prints it, for the types whose data is not an address."""
    if r.check.qtype in ADDRESS_TYPES:
        return []
    return [f"    {record}" for record in r.records]


class Streamer:
    """Table rows written as probes complete, in columns sized before the first reply."""

    def __init__(self, targets: Sequence[Target], check: Check, out: TextIO) -> None:
        longest_name = len(check.qname) + max((len(d) + 1 for d in check.search), default=0)
        self.widths = [max((len(t.endpoint) for t in targets), default=0), longest_name,
                       max(len(o.value) for o in Outcome), len("NXDOMAIN"), len("1000.00"),
                       len("255.255.255.255"), len("UDP_ONLY"), 0]
        self.out = out
        self.out.write(table([HEADER], min_widths=self.widths)[0] + "\n")
        self.out.flush()

    def row(self, result: ProbeResult) -> None:
        line = table([HEADER, _cells(result)], min_widths=self.widths)[1]
        self.out.write("\n".join([line, *_record_lines(result)]) + "\n")
        self.out.flush()


def as_dict(result: ProbeResult) -> dict[str, Any]:
    return {
        "server": result.target.endpoint, "name": result.qname or result.check.qname,
        "type": result.check.qtype, "outcome": result.outcome.value, "rcode": result.rcode,
        "rtt_seconds": result.rtt_seconds, "answers": list(result.answers),
        "udp_only": result.udp_only, "detail": result.detail,
        "records": list(result.records),
    }


def summary(results: Sequence[ProbeResult]) -> dict[str, Any]:
    ok = sum(r.ok for r in results)
    return {"probes": len(results), "ok": ok, "failed": len(results) - ok,
            "outcomes": dict(Counter(r.outcome.value for r in results))}


def per_server(results: Sequence[ProbeResult]) -> list[dict[str, Any]]:
    """Ping's summary for each server: sent, ok, loss, and min/avg/max RTT of the replies."""
    servers: dict[str, list[ProbeResult]] = {}
    for r in results:
        servers.setdefault(r.target.endpoint, []).append(r)
    out = []
    for endpoint, mine in servers.items():
        ok = sum(r.ok for r in mine)
        rtts = [r.rtt_seconds for r in mine if r.rtt_seconds is not None
                and r.outcome is not Outcome.TIMEOUT]
        out.append({
            "server": endpoint, "sent": len(mine), "ok": ok,
            "loss_percent": round(100 * (len(mine) - ok) / len(mine), 1),
            "rtt_min_seconds": min(rtts) if rtts else None,
            "rtt_avg_seconds": sum(rtts) / len(rtts) if rtts else None,
            "rtt_max_seconds": max(rtts) if rtts else None,
        })
    return out


def render_json(results: Sequence[ProbeResult]) -> str:
    document = {"results": [as_dict(r) for r in results], "summary": summary(results),
                "servers": per_server(results)}
    return json.dumps(document, indent=2) + "\n"


def render_summary(results: Sequence[ProbeResult]) -> str:
    """Ping's closing lines, one per server, then the count of probes that were ok."""
    lines = []
    for s in per_server(results):
        rtt = "-"
        if s["rtt_min_seconds"] is not None:
            rtt = "/".join(f"{s[k] * 1000:.2f}" for k in
                           ("rtt_min_seconds", "rtt_avg_seconds", "rtt_max_seconds")) + " ms"
        lines.append(f"--- {s['server']}: {s['sent']} sent, {s['ok']} ok, "
                     f"{s['loss_percent']:g}% loss, rtt min/avg/max {rtt}")
    total = summary(results)
    lines.append(f"{total['ok']} of {total['probes']} probes ok")
    return "\n".join(lines) + "\n"


def render_table(results: Sequence[ProbeResult]) -> str:
    """The whole table at once (every row, then the summary), for a finished run."""
    rows = [HEADER] + [_cells(r) for r in results]
    lines: list[str] = []
    for line, r in zip(table(rows)[1:], results, strict=True):
        lines += [line, *_record_lines(r)]
    return "\n".join([table(rows)[0], *lines]) + "\n" + render_summary(results)
