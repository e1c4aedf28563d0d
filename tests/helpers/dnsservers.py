"""Real DNS servers from Debian's packages, started on loopback for tests and benchmarks.

Owns: writing a throw-away config for unbound, named (bind9) or knotd, starting
the server (optionally inside a network namespace), waiting until it answers,
reading its query counter, and killing it afterwards.
Never does: recurse. Every server answers only from local data (unbound
refuses everything outside cluster.local; named and knotd have recursion off).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from corednsprobe.probe import wire

SERVICE_IP = "10.96.0.1"
ZONE_RECORDS = (
    "kubernetes.default.svc.cluster.local. 30 IN A 10.96.0.1",
    "multi.default.svc.cluster.local. 30 IN A 10.96.0.7",
    "multi.default.svc.cluster.local. 30 IN A 10.96.0.8",
    "alias.default.svc.cluster.local. 30 IN CNAME kubernetes.default.svc.cluster.local.",
    "v6only.default.svc.cluster.local. 30 IN AAAA fd00::1",
)
_counter = itertools.count()


@dataclass
class RunningServer:
    """A DNS server process we started; ``queries()`` reads its own counter."""

    kind: str
    address: str
    port: int
    process: subprocess.Popen[bytes]
    workdir: Path
    netns: str | None = None
    control: list[str] = field(default_factory=list)

    def queries(self) -> int:
        """Queries the server counted since it started (unbound only)."""
        out = subprocess.run([*self._ns(), *self.control, "stats_noreset"], check=True,
                             capture_output=True, text=True, timeout=10).stdout
        stats = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
        return int(stats["total.num.queries"])

    def _ns(self) -> list[str]:
        return ["ip", "netns", "exec", self.netns] if self.netns else []


def free_port(address: str = "127.0.0.1") -> int:
    """A port free for both UDP and TCP on ``address`` right now."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind((address, 0))
            port = int(udp.getsockname()[1])
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
                try:
                    tcp.bind((address, port))
                except OSError:
                    continue
                return port
    raise RuntimeError("no free port")


def ask(address: str, port: int, name: str, qtype: str = "A", timeout: float = 0.5
        ) -> wire.Reply | None:
    """One blocking UDP question (for readiness checks); None on no reply."""
    query = wire.with_id(wire.question_bytes(name, qtype), 4242)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.sendto(query, (address, port))
            data = sock.recv(4096)
        except OSError:
            return None
    parsed = wire.parse(data)
    return parsed if isinstance(parsed, wire.Reply) else None


def wait_until_answers(address: str, port: int, name: str, process: subprocess.Popen[bytes],
                       netns: str | None = None, limit: float = 10.0) -> None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}")
        if netns is None:
            if ask(address, port, name) is not None:
                return
        elif _ask_in_netns(netns, address, port, name):
            return
        time.sleep(0.05)
    raise RuntimeError(f"no answer from {address}:{port} within {limit}s")


def _ask_in_netns(netns: str, address: str, port: int, name: str) -> bool:
    done = subprocess.run(["ip", "netns", "exec", netns, "dig", "+tries=1", "+time=1",
                           "-p", str(port), f"@{address}", name],
                          capture_output=True, timeout=10)
    return done.returncode == 0


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


@contextlib.contextmanager
def _running(cmd: Sequence[str], workdir: Path, netns: str | None) -> Iterator[
        subprocess.Popen[bytes]]:
    prefix = ["ip", "netns", "exec", netns] if netns else []
    log = (workdir / "server.log").open("wb")
    process = subprocess.Popen([*prefix, *cmd], stdout=log, stderr=subprocess.STDOUT)
    try:
        yield process
    finally:
        _stop(process)
        log.close()


def unbound_conf(address: str, port: int, workdir: Path,
                 records: Sequence[str] = ZONE_RECORDS, nsid: str = "") -> str:
    data = "\n".join(f'  local-data: "{r}"' for r in records)
    if nsid:  # the server names itself to queries that ask (EDNS NSID, RFC 5001)
        data += f'\n  nsid: "ascii_{nsid}"'
    return f"""server:
  interface: {address}@{port}
  port: {port}
  do-daemonize: no
  username: ""
  chroot: ""
  directory: "{workdir}"
  pidfile: ""
  use-syslog: no
  logfile: ""
  verbosity: 0
  num-threads: 1
  so-reuseport: no
  do-ip6: no
  module-config: "iterator"
  access-control: 127.0.0.0/8 allow
  local-zone: "." refuse
  local-zone: "cluster.local." static
  local-data: "cluster.local. 30 IN SOA ns.cluster.local. admin.cluster.local. 1 7200 1800 86400 30"
{data}
remote-control:
  control-enable: yes
  control-interface: "{workdir}/control.sock"
  control-use-cert: no
"""


@contextlib.contextmanager
def unbound(workdir: Path, address: str = "127.0.0.1", port: int | None = None,
            netns: str | None = None, records: Sequence[str] = ZONE_RECORDS, nsid: str = ""
            ) -> Iterator[RunningServer]:
    """unbound answering cluster.local from local data and REFUSED for everything else."""
    workdir = workdir / f"unbound{next(_counter)}"
    workdir.mkdir(parents=True)
    port = port or (53 if netns else free_port(address))
    conf = workdir / "unbound.conf"
    conf.write_text(unbound_conf(address, port, workdir, records, nsid))
    with _running(["unbound", "-d", "-c", str(conf)], workdir, netns) as process:
        wait_until_answers(address, port, "kubernetes.default.svc.cluster.local", process, netns)
        yield RunningServer("unbound", address, port, process, workdir, netns,
                            ["unbound-control", "-c", str(conf)])


@contextlib.contextmanager
def named_with_broken_zone(workdir: Path, address: str = "127.0.0.1") -> Iterator[RunningServer]:
    """named whose cluster.local zone fails to load: it answers SERVFAIL for that zone."""
    workdir = workdir / f"named{next(_counter)}"
    workdir.mkdir(parents=True)
    port = free_port(address)
    (workdir / "broken.zone").write_text("this is not a zone file {\n")
    conf = workdir / "named.conf"
    conf.write_text(f"""options {{
  directory "{workdir}";
  listen-on port {port} {{ {address}; }};
  listen-on-v6 {{ none; }};
  recursion no;
  dnssec-validation no;
  pid-file none;
  session-keyfile none;
}};
controls {{ }};
zone "cluster.local" {{ type primary; file "{workdir}/broken.zone"; }};
""")
    with _running(["named", "-g", "-n", "1", "-c", str(conf)], workdir, None) as process:
        wait_until_answers(address, port, "kubernetes.default.svc.cluster.local", process)
        yield RunningServer("named", address, port, process, workdir)


@contextlib.contextmanager
def knot(workdir: Path, addresses: Sequence[str], port: int = 5353,
         records: Sequence[str] = ZONE_RECORDS) -> Iterator[RunningServer]:
    """knotd serving cluster.local on every address in ``addresses`` (one listen list)."""
    workdir = workdir / f"knot{next(_counter)}"
    workdir.mkdir(parents=True)
    zone = workdir / "cluster.local.zone"
    zone.write_text("$ORIGIN cluster.local.\n$TTL 30\n"
                    "@ SOA ns admin 1 7200 1800 86400 30\n@ NS ns\nns A 127.0.0.1\n"
                    + "".join(f"{record}\n" for record in records))
    listen = ", ".join(f"{a}@{port}" for a in addresses)
    conf = workdir / "knot.conf"
    conf.write_text(f"""server:
  rundir: "{workdir}"
  user: root:root
  udp-workers: 1
  tcp-workers: 1
  background-workers: 1
  listen: [ {listen} ]
database:
  storage: "{workdir}"
template:
  - id: default
    storage: "{workdir}"
    file: "%s.zone"
zone:
  - domain: cluster.local
log:
  - target: stderr
    any: warning
""")
    with _running(["knotd", "-c", str(conf)], workdir, None) as process:
        wait_until_answers(addresses[0], port, "kubernetes.default.svc.cluster.local", process,
                           limit=120)
        yield RunningServer("knot", addresses[0], port, process, workdir)


def unique_name(tag: str) -> str:
    """A per-process, per-call name (netns, links, nft tables) with this area's prefix."""
    return f"cdpd{os.getpid()}{tag}{next(_counter)}"
