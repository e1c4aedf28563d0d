"""The texts the network-namespace backend hands to real tools.

Owns: an unbound configuration per pod and server mode, the nft ruleset of a
pod's namespace for each UDP fault, and the host-side nft ruleset that makes
ClusterIPs work the way kube-proxy's nftables mode does. Pure functions.

Never does: run anything; recurse (every unbound config refuses ".", uses the
iterator only, and its SERVFAIL mode forwards to a loopback address that
unbound is configured never to query, so no packet leaves).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping, Sequence
from enum import StrEnum
from pathlib import Path

from corednsprobe.sandbox.backend import Fault, FaultKind, ZoneData
from corednsprobe.sandbox.responder import TTL, falsified

DNS_PORT = 53
DELAY_RELAY_PORT = 5300
POD_TABLE = "cdpspod"
_PLAIN_NAME = re.compile(r"^[a-z0-9_*]([a-z0-9_.-]*[a-z0-9_])?$")


class ServerMode(StrEnum):
    TRUTH = "truth"
    SERVFAIL = "servfail"
    WRONG_ANSWER = "wrong-answer"


def server_mode(fault: Fault) -> ServerMode:
    if fault.kind is FaultKind.SERVFAIL:
        return ServerMode.SERVFAIL
    if fault.kind is FaultKind.WRONG_ANSWER:
        return ServerMode.WRONG_ANSWER
    return ServerMode.TRUTH


def _local_data(zone: ZoneData) -> list[str]:
    domain = zone.domain.strip(".").lower()
    lines = [f'local-data: "{domain}. {TTL} IN SOA ns.dns.{domain}. hostmaster.{domain}. '
             f'1 7200 1800 86400 {TTL}"']
    for name, addresses in sorted(zone.records.items()):
        if not _PLAIN_NAME.match(name):
            continue  # nothing unbound could be told safely; it stays NXDOMAIN
        for address in addresses:
            try:
                version = ipaddress.ip_address(address).version
            except ValueError:
                continue
            rtype = "A" if version == 4 else "AAAA"
            lines.append(f'local-data: "{name}. {TTL} IN {rtype} {address}"')
    return lines


def unbound_config(ip: str, directory: Path, zone: ZoneData, mode: ServerMode) -> str:
    """An authoritative-only unbound for one pod, answering ``zone`` at ``ip``:53."""
    domain = zone.domain.strip(".").lower()
    server = [
        f"interface: {ip}@{DNS_PORT}", f"port: {DNS_PORT}", 'username: ""', 'chroot: ""',
        f'directory: "{directory}"', 'pidfile: ""', "use-syslog: no", 'logfile: ""',
        "verbosity: 0", "num-threads: 1", "do-ip6: no", "so-reuseport: no",
        "access-control: 0.0.0.0/0 allow", 'module-config: "iterator"',
        "do-not-query-localhost: yes", 'local-zone: "." refuse',
    ]
    tail: list[str] = []
    if mode is ServerMode.SERVFAIL:
        # The zone is resolved by forwarding to loopback, which unbound never queries:
        # every question in it is answered SERVFAIL at once, without a packet sent.
        server.append(f'local-zone: "{domain}." transparent')
        tail = ["forward-zone:", f'  name: "{domain}."', "  forward-addr: 127.0.0.1@9"]
    else:
        shown = falsified(zone) if mode is ServerMode.WRONG_ANSWER else zone
        server.append(f'local-zone: "{domain}." static')
        server.extend(_local_data(shown))
    control = ["remote-control:", "  control-enable: yes",
               f'  control-interface: "{directory / "control.sock"}"',
               "  control-use-cert: no"]
    return "\n".join(["server:", *(f"  {line}" for line in server), *tail, *control, ""])


def _replace_table(family: str, name: str, body: list[str]) -> str:
    """An nft script that swaps the table atomically (one transaction)."""
    script = [f"add table {family} {name}", f"delete table {family} {name}"]
    if body:
        script += [f"table {family} {name} {{", *body, "}"]
    return "\n".join(script) + "\n"


def pod_ruleset(fault: Fault) -> str:
    """The pod namespace's table: UDP/53 faults only; TCP and the health port untouched."""
    from_outside = 'iifname "eth0" udp dport 53'  # the pod's own relay talks over lo
    input_rule = {
        FaultKind.DROP: f"{from_outside} drop",
        FaultKind.REJECT: f"{from_outside} reject",
        FaultKind.LOSS: f"{from_outside} numgen random mod 1000 < {round(fault.value * 10)} drop",
    }.get(fault.kind)
    body: list[str] = []
    if input_rule is not None:
        body += ["  chain input {", "    type filter hook input priority 0; policy accept;",
                 f"    {input_rule}", "  }"]
    if fault.kind is FaultKind.DELAY:
        body += ["  chain prerouting {",
                 "    type nat hook prerouting priority -100; policy accept;",
                 f"    {from_outside} redirect to :{DELAY_RELAY_PORT}", "  }"]
    return _replace_table("inet", POD_TABLE, body)


def _service_rules(cluster_ip: str, backends: Sequence[str], broken: bool) -> tuple[str, str]:
    """(filter rules, nat rules) for one ClusterIP."""
    match = f"ip daddr {cluster_ip}"
    if broken:
        return f"    {match} drop", ""
    if not backends:
        return (f"    {match} udp dport 53 reject\n"
                f"    {match} tcp dport 53 reject with tcp reset"), ""
    spread = ", ".join(f"{index} : {ip}" for index, ip in enumerate(backends))
    return "", (f"    {match} meta l4proto {{ udp, tcp }} th dport 53 "
                f"dnat to numgen random mod {len(backends)} map {{ {spread} }}")


def service_ruleset(table: str, services: Mapping[str, Sequence[str]], broken: bool) -> str:
    """The host table: DNAT each ClusterIP to a random ready pod (conntrack keeps the
    flow on it), reject when there are none, drop everything when the path is broken."""
    filters, nats = [], []
    for cluster_ip, backends in sorted(services.items()):
        filter_rules, nat_rules = _service_rules(cluster_ip, backends, broken)
        filters += [filter_rules] if filter_rules else []
        nats += [nat_rules] if nat_rules else []
    body = ["  chain guard {", "    type filter hook output priority -110; policy accept;",
            *filters, "  }",
            "  chain clusterip {", "    type nat hook output priority -100; policy accept;",
            *nats, "  }"]
    return _replace_table("ip", table, body)
