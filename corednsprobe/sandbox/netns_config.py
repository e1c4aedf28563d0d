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
HEALTH_PORT = 8080  # CoreDNS's health plugin: the pod spec's livenessProbe (sandbox/cluster.py)
READY_PORT = 8181  # CoreDNS's ready plugin: the pod spec's readinessProbe
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


def unbound_config(ip: str, directory: Path, zone: ZoneData, mode: ServerMode,
                   nsid: str | None = None) -> str:
    """An authoritative-only unbound for one pod, answering ``zone`` at ``ip``:53;
    with ``nsid`` (the pod name) it answers EDNS NSID queries with it."""
    domain = zone.domain.strip(".").lower()
    server = [
        f"interface: {ip}@{DNS_PORT}", f"port: {DNS_PORT}", 'username: ""', 'chroot: ""',
        f'directory: "{directory}"', 'pidfile: ""', "use-syslog: no", 'logfile: ""',
        "verbosity: 0", "num-threads: 1", "do-ip6: no", "so-reuseport: no",
        "access-control: 0.0.0.0/0 allow", 'module-config: "iterator"',
        "do-not-query-localhost: yes", 'local-zone: "." refuse',
    ]
    if nsid is not None:
        if not _PLAIN_NAME.match(nsid):
            raise ValueError(f"NSID {nsid!r}: a pod name of [a-z0-9.-] was expected")
        server.append(f'nsid: "ascii_{nsid}"')
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
    """The pod namespace's table: UDP/53 faults; TCP untouched; the health port
    (not the ready port) dropped when the fault says ``health_down``."""
    from_outside = 'iifname "eth0" udp dport 53'  # the pod's own relay talks over lo
    input_rule = {
        FaultKind.DROP: f"{from_outside} drop",
        FaultKind.REJECT: f"{from_outside} reject",
        FaultKind.LOSS: f"{from_outside} numgen random mod 1000 < {round(fault.value * 10)} drop",
    }.get(fault.kind)
    rules = [input_rule] if input_rule is not None else []
    if fault.health_down:
        rules.append(f'iifname "eth0" tcp dport {HEALTH_PORT} drop')
    body: list[str] = []
    if rules:
        body += ["  chain input {", "    type filter hook input priority 0; policy accept;",
                 *(f"    {rule}" for rule in rules), "  }"]
    if fault.kind is FaultKind.DELAY:
        body += ["  chain prerouting {",
                 "    type nat hook prerouting priority -100; policy accept;",
                 f"    {from_outside} redirect to :{DELAY_RELAY_PORT}", "  }"]
    return _replace_table("inet", POD_TABLE, body)


def _service_rule(cluster_ip: str, backends: Sequence[str], broken: bool,
                  sinks: tuple[str, str]) -> str:
    """The nat rule for one ClusterIP.

    kube-proxy drops or rejects where a pod client's packets pass; here the client
    is a local process, and a drop or reject in the output path would fail its
    send() with EPERM instead. So the broken path and the empty Service lead to
    two addresses of a namespace of their own, which drops the first and answers
    the second as a pod client would see a reject: ICMP port unreachable for UDP,
    a reset for TCP (nothing listens there)."""
    dropping, rejecting = sinks
    if broken:
        target = dropping
    elif not backends:
        target = rejecting
    else:
        spread = ", ".join(f"{index} : {ip}" for index, ip in enumerate(backends))
        target = f"numgen random mod {len(backends)} map {{ {spread} }}"
    return f"    ip daddr {cluster_ip} meta l4proto {{ udp, tcp }} th dport 53 dnat to {target}"


def _frontend_rule(address: str, port: int, backends: Sequence[str]) -> str:
    """The nat rule for a NodePort on one node address, or a LoadBalancer address."""
    if len(backends) == 1:
        target = f"{backends[0]}:{DNS_PORT}"
    else:
        spread = ", ".join(f"{index} : {ip}" for index, ip in enumerate(backends))
        target = f"numgen random mod {len(backends)} map {{ {spread} }} : {DNS_PORT}"
    return f"    ip daddr {address} meta l4proto {{ udp, tcp }} th dport {port} dnat to {target}"


def service_ruleset(table: str, services: Mapping[str, Sequence[str]], broken: bool,
                    sinks: tuple[str, str], supernet: str, pods: str,
                    frontends: Mapping[tuple[str, int], Sequence[str]] | None = None) -> str:
    """The host table: DNAT each ClusterIP to a random ready pod (conntrack keeps the
    flow on it), each frontend (node address and nodePort, LoadBalancer address and
    port) to a random one of its pods at port 53, to the rejecting sink when there
    are none, and to the dropping sink when the path is broken. ``sinks`` is
    (dropping, rejecting). The frontends are DNAT'd for packets routed in too (a
    client namespace beside the cluster). A forward guard keeps anything the
    namespaces send from being routed off this host, should forwarding be on, but
    the replies of connections to a frontend."""
    rules = [_service_rule(ip, backends, broken, sinks)
             for ip, backends in sorted(services.items())]
    exposed = [_frontend_rule(address, port, backends)
               for (address, port), backends in sorted((frontends or {}).items()) if backends]
    body = ["  chain clusterip {", "    type nat hook output priority -100; policy accept;",
            *rules, *exposed, "  }",
            # frontends also for packets routed in (a client namespace beside the cluster,
            # forwarding on where it enters); ClusterIPs stay reachable only from here
            "  chain frontends {", "    type nat hook prerouting priority -100; policy accept;",
            *exposed, "  }",
            "  chain egress_guard {", "    type filter hook forward priority 0; policy accept;",
            f"    ip saddr {supernet} ip daddr != {pods} ct status dnat accept",
            f"    ip saddr {supernet} ip daddr != {pods} drop", "  }"]
    return _replace_table("ip", table, body)


def sink_ruleset(dropping: str) -> str:
    """The sink namespace's table: everything sent to ``dropping`` vanishes."""
    body = ["  chain input {", "    type filter hook input priority 0; policy accept;",
            f"    ip daddr {dropping} drop", "  }"]
    return _replace_table("inet", POD_TABLE, body)
