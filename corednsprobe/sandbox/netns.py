"""The sandbox's DNS backend with real DNS servers in network namespaces (root).

Owns, per instance (all names start with ``<prefix><4-digit id>``): a bridge
in the host namespace holding the pods' gateway address, one network namespace
per pod (veth to the bridge, an unbound from Debian's packages on
``<pod-ip>:53`` answering only from local data, CoreDNS's health (8080
/health) and ready (8181 /ready) HTTP ports beside it), a sink namespace where
a broken Service path (dropped) and a Service without ready pods (ICMP port
unreachable, TCP reset) lead, a host nft table that makes the ClusterIPs,
NodePorts on the node addresses and the LoadBalancer addresses work as
kube-proxy's nftables mode does and never forwards the namespaces' packets off
the host, and a blackhole route over the whole instance range so that no
packet for it can leave by the host's default route. Pod faults are nft rules
in the pod's namespace, a delaying relay process, or an unbound
reconfiguration (SERVFAIL, wrong answers).

Known limit: without the ``conntrack`` tool, UDP conntrack entries are not
flushed when the ready set or a fault changes, so a client that reuses its
source port within the UDP conntrack timeout keeps its old path; clients that
use a fresh port per query (probes, dig) always see the current one.

Every instance holds an flock on ``/run/corednsprobe-sandbox/<name>.lock``
while it lives; ``cleanup_stale`` removes what instances without a live lock
left behind, and never touches a live one.

Never does: touch addresses, links, namespaces or tables outside its own
names and ranges; let a server recurse.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import ipaddress
import itertools
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from corednsprobe import logs
from corednsprobe.sandbox import netns_config as config
from corednsprobe.sandbox.backend import DnsBackend, Fault, FaultKind, ZoneData
from corednsprobe.sandbox.responder import encode_name

log = logs.get(__name__)

STATE_DIR = Path("/run/corednsprobe-sandbox")
ADDRESS_POOL = ipaddress.IPv4Network("10.128.0.0/9")
INSTANCE_PREFIXLEN = 21  # pods: first /22; ClusterIPs: fifth /24; nodes: sixth; LBs: eighth
ROUTE_METRIC = 53053  # marks the instance's blackhole route
HEALTH_PORT = config.HEALTH_PORT
READY_PORT = config.READY_PORT
START_TIMEOUT_SECONDS = 10.0
STOP_TIMEOUT_SECONDS = 2.0
_SCRIPTS = Path(__file__).resolve().parent
REQUIRED_TOOLS = ("ip", "nft", "unbound", "unbound-control")


class BackendUnavailable(RuntimeError):
    """The machine cannot run this backend (not root, a tool missing)."""


class CommandFailed(RuntimeError):
    """A plumbing command exited non-zero."""


def _check_host() -> None:
    if os.geteuid() != 0:
        raise BackendUnavailable("the netns DNS backend needs root (network namespaces, nft)")
    missing = [tool for tool in REQUIRED_TOOLS if shutil.which(tool) is None]
    if missing:
        raise BackendUnavailable(f"the netns DNS backend needs {', '.join(missing)} "
                                 "(Debian packages iproute2, nftables, unbound)")


async def run(*argv: str, stdin: str | None = None, check: bool = True) -> str:
    """Run a command; its stdout, or CommandFailed with its stderr."""
    proc = await asyncio.create_subprocess_exec(
        *argv, stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    out, err = await proc.communicate(stdin.encode() if stdin is not None else None)
    if check and proc.returncode != 0:
        raise CommandFailed(f"{' '.join(argv)}: {err.decode(errors='replace').strip()}")
    return out.decode(errors="replace")


def _run_sync(*argv: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, input=stdin, capture_output=True, text=True, check=False)


# ---------------------------------------------------------------- instance claim


@dataclass
class _Claim:
    """An instance name held by an flock, and the address range it owns."""

    name: str
    lock: IO[str]
    supernet: ipaddress.IPv4Network | None = None

    def record(self) -> None:
        self.lock.seek(0)
        self.lock.truncate()
        self.lock.write(json.dumps({"pid": os.getpid(), "supernet": str(self.supernet)}))
        self.lock.flush()


def _try_lock(path: Path) -> IO[str] | None:
    handle = path.open("a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.close()
        return None
    return handle


def _claim_name(prefix: str) -> _Claim:
    STATE_DIR.mkdir(mode=0o700, exist_ok=True)
    first = (os.getpid() % 1000) * 10
    for offset in range(10000):
        name = f"{prefix}{(first + offset) % 10000:04d}"
        lock = _try_lock(STATE_DIR / f"{name}.lock")
        if lock is not None:
            _remove_instance_leftovers(name, _read_state(lock))
            return _Claim(name, lock)
    raise BackendUnavailable(f"no free instance name with prefix {prefix!r}")


def _used_networks() -> list[ipaddress.IPv4Network]:
    used = []
    routes = json.loads(_run_sync("ip", "-4", "-j", "route", "show", "table", "all").stdout or "[]")
    for route in routes:
        if route.get("dst", "default") != "default":
            used.append(ipaddress.IPv4Network(route["dst"], strict=False))
    for link in json.loads(_run_sync("ip", "-4", "-j", "addr").stdout or "[]"):
        for addr in link.get("addr_info", []):
            used.append(ipaddress.IPv4Network(f"{addr['local']}/{addr['prefixlen']}", strict=False))
    return used


def _candidate_supernets(start: int) -> Iterator[ipaddress.IPv4Network]:
    candidates = list(ADDRESS_POOL.subnets(new_prefix=INSTANCE_PREFIXLEN))
    for offset in range(len(candidates)):
        yield candidates[(start + offset) % len(candidates)]


def _claim_supernet(claim: _Claim) -> None:
    """Take a free range by adding its blackhole route (adding fails if it exists)."""
    used = _used_networks()
    for net in _candidate_supernets(int(claim.name[-4:]) * 7):
        if any(net.overlaps(other) for other in used):
            continue
        added = _run_sync("ip", "route", "add", "blackhole", str(net), "metric", str(ROUTE_METRIC))
        if added.returncode == 0:
            claim.supernet = net
            claim.record()
            return
    raise BackendUnavailable(f"no free /{INSTANCE_PREFIXLEN} in {ADDRESS_POOL}")


# ---------------------------------------------------------------- stale cleanup


def _read_state(lock: IO[str]) -> dict[str, str]:
    lock.seek(0)
    try:
        state = json.loads(lock.read() or "{}")
    except json.JSONDecodeError:
        return {}
    return state if isinstance(state, dict) else {}


def _names_with_prefix(prefix: str) -> tuple[list[str], list[str], list[str]]:
    """(netns, links, ip tables) whose names start with ``prefix``."""
    namespaces = [line.split()[0] for line in _run_sync("ip", "netns", "list").stdout.splitlines()
                  if line.startswith(prefix)]
    links = [link["ifname"] for link in json.loads(_run_sync("ip", "-j", "link").stdout or "[]")
             if link["ifname"].startswith(prefix)]
    tables = [line.split()[-1] for line in _run_sync("nft", "list", "tables").stdout.splitlines()
              if line.split()[-1].startswith(prefix)]
    return namespaces, links, tables


def process_running(pid: int) -> bool:
    """True unless ``pid`` is gone or a zombie waiting for its parent."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[:1] != ["Z"]


def _kill_namespace(netns: str) -> None:
    """SIGKILL whatever still runs in ``netns``, wait (bounded) until it is dead,
    then delete the namespace."""
    pids = [int(p) for p in _run_sync("ip", "netns", "pids", netns).stdout.split()]
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, 9)
    deadline = time.monotonic() + STOP_TIMEOUT_SECONDS
    while any(map(process_running, pids)) and time.monotonic() < deadline:
        time.sleep(0.01)
    _run_sync("ip", "netns", "del", netns)


def _remove_instance_leftovers(name: str, state: dict[str, str]) -> None:
    """Remove everything named ``name``… and the recorded range's blackhole route."""
    namespaces, links, tables = _names_with_prefix(name)
    for netns in namespaces:
        _kill_namespace(netns)
    for link in links:
        _run_sync("ip", "link", "del", link)
    for table in tables:
        _run_sync("nft", "delete", "table", "ip", table)
    if state.get("supernet") not in (None, "None"):
        _run_sync("ip", "route", "del", "blackhole", state["supernet"],
                  "metric", str(ROUTE_METRIC))
    shutil.rmtree(STATE_DIR / name, ignore_errors=True)


def cleanup_stale(prefix: str = "cdps") -> list[str]:
    """Remove leftovers of crashed instances whose names start with ``prefix``;
    live instances (their lock held) are left alone. Returns the names cleaned."""
    if os.geteuid() != 0 or not STATE_DIR.is_dir():
        return []
    cleaned = []
    for lock_path in sorted(STATE_DIR.glob(f"{prefix}*.lock")):
        lock = _try_lock(lock_path)
        if lock is None:
            continue
        with lock:
            name = lock_path.name.removesuffix(".lock")
            _remove_instance_leftovers(name, _read_state(lock))
            lock_path.unlink(missing_ok=True)
        cleaned.append(name)
    if cleaned:
        log.info("stale_sandbox_removed", instances=cleaned)
    return cleaned


# ---------------------------------------------------------------- pods


@dataclass
class _Pod:
    name: str
    ip: str
    netns: str
    host_link: str
    directory: Path
    fault: Fault = field(default_factory=Fault)
    mode: config.ServerMode = config.ServerMode.TRUTH
    server: asyncio.subprocess.Process | None = None
    health: asyncio.subprocess.Process | None = None
    relay: asyncio.subprocess.Process | None = None
    relay_delay: float | None = None

    @property
    def config_path(self) -> Path:
        return self.directory / "unbound.conf"


async def _spawn_in(netns: str, argv: Sequence[str], log_path: Path) -> asyncio.subprocess.Process:
    with log_path.open("ab") as log_file:
        return await asyncio.create_subprocess_exec(
            "ip", "netns", "exec", netns, *argv,
            stdin=subprocess.DEVNULL, stdout=log_file, stderr=log_file, start_new_session=True,
        )


async def _stop(proc: asyncio.subprocess.Process | None) -> None:
    if proc is None or proc.returncode is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.terminate()
    try:
        await asyncio.wait_for(proc.wait(), STOP_TIMEOUT_SECONDS)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()


class _SoaProbe(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.answered: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    def datagram_received(self, data: bytes, addr: tuple[str | object, int]) -> None:
        if not self.answered.done():
            self.answered.set_result(data)

    def error_received(self, exc: Exception) -> None:
        if not self.answered.done():
            self.answered.set_result(b"")  # refused: nothing listens yet


async def udp_answers(ip: str, port: int, domain: str, within: float) -> bool:
    """True when ``ip``:``port`` answers a UDP query for ``domain``'s SOA."""
    header = b"\x53\x53\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00"
    query = header + encode_name(domain) + b"\x00\x06\x00\x01"
    loop = asyncio.get_running_loop()
    transport, probe = await loop.create_datagram_endpoint(_SoaProbe, remote_addr=(ip, port))
    try:
        transport.sendto(query)
        reply = await asyncio.wait_for(probe.answered, within)
        return reply[:2] == query[:2]
    except TimeoutError:
        return False
    finally:
        transport.close()


async def tcp_accepts(ip: str, port: int, within: float) -> bool:
    try:
        async with asyncio.timeout(within):
            _, writer = await asyncio.open_connection(ip, port)
    except (OSError, TimeoutError):
        return False
    writer.close()
    return True


async def http_ok(ip: str, port: int, within: float, path: str = "/health") -> bool:
    """True when ``GET <path>`` on ``ip``:``port`` answers 200."""
    try:
        async with asyncio.timeout(within):
            reader, writer = await asyncio.open_connection(ip, port)
            try:
                writer.write(f"GET {path} HTTP/1.1\r\nHost: {ip}\r\n\r\n".encode())
                await writer.drain()
                status_line = await reader.readline()
            finally:
                writer.close()
    except (OSError, TimeoutError):
        return False
    return status_line.split(b" ")[1:2] == [b"200"]



async def _poll(check: Callable[[], Awaitable[bool]], what: str, within: float) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not await check():
        if loop.time() > deadline:
            raise TimeoutError(f"{what} did not come up within {within:g} s")
        await asyncio.sleep(0.005)


@dataclass(frozen=True)
class _Layout:
    """An instance's address plan inside its claimed range."""

    supernet: ipaddress.IPv4Network

    @property
    def pods(self) -> ipaddress.IPv4Network:
        return next(self.supernet.subnets(new_prefix=22))

    @property
    def gateway(self) -> str:
        return str(self.pods[1])

    @property
    def services(self) -> ipaddress.IPv4Network:
        return list(self.supernet.subnets(new_prefix=24))[4]

    @property
    def nodes(self) -> ipaddress.IPv4Network:
        """Node InternalIPs: routed to the bridge, DNAT'd at NodePorts like ClusterIPs."""
        return list(self.supernet.subnets(new_prefix=24))[5]

    @property
    def externals(self) -> ipaddress.IPv4Network:
        """The sandbox "cloud"'s LoadBalancer ingress addresses."""
        return list(self.supernet.subnets(new_prefix=24))[7]  # the sixth /24 stays unused

    @property
    def sinks(self) -> tuple[str, str]:
        """(dropping, rejecting) addresses of the sink namespace, where a broken Service
        path and a Service without ready pods lead."""
        return str(self.pods[-3]), str(self.pods[-2])


class NetnsBackend:
    """``DnsBackend`` with an unbound per pod in its own network namespace (root)."""

    name = "netns"
    port = config.DNS_PORT
    health_port = HEALTH_PORT
    ready_port = READY_PORT
    nsid = False

    def __init__(self, domain: str = "cluster.local", server: str = "unbound",
                 prefix: str = "cdps") -> None:
        if server != "unbound":
            raise ValueError(f"unsupported DNS server {server!r}: only 'unbound' is built in")
        self.domain, self.prefix = domain, prefix
        self.pod_start_seconds: list[float] = []
        self._zone = ZoneData(domain)
        self._claim: _Claim | None = None
        self._layout: _Layout | None = None
        self._pods: dict[str, _Pod] = {}
        self._pod_numbers = itertools.count(1)
        self._pod_ips: Iterator[str] = iter(())
        self._service_ips: Iterator[str] = iter(())
        self._node_ips: Iterator[str] = iter(())
        self._external_ips: Iterator[str] = iter(())
        self._services: dict[str, tuple[str, ...]] = {}
        self._frontends: dict[tuple[str, int], tuple[str, ...]] = {}
        self._service_broken = False

    # -------------------------------------------------------------- names

    @property
    def instance(self) -> str:
        if self._claim is None:
            raise RuntimeError("the netns backend is not started")
        return self._claim.name

    @property
    def bridge(self) -> str:
        return f"{self.instance}br"

    @property
    def layout(self) -> _Layout:
        if self._layout is None:
            raise RuntimeError("the netns backend is not started")
        return self._layout

    @property
    def workdir(self) -> Path:
        return STATE_DIR / self.instance

    # -------------------------------------------------------------- life

    async def start(self) -> None:
        _check_host()
        try:
            self._claim = await asyncio.to_thread(_claim_name, self.prefix)
            await asyncio.to_thread(_claim_supernet, self._claim)
            assert self._claim.supernet is not None
            self._layout = layout = _Layout(self._claim.supernet)
            gateway = ipaddress.IPv4Address(layout.gateway)
            reserved = {gateway, *map(ipaddress.IPv4Address, layout.sinks)}
            self._pod_ips = (str(h) for h in layout.pods.hosts() if h not in reserved)
            self._service_ips = (str(h) for h in layout.services.hosts())
            self._node_ips = (str(h) for h in layout.nodes.hosts())
            self._external_ips = (str(h) for h in layout.externals.hosts())
            self.workdir.mkdir(mode=0o700, exist_ok=True)
            await self._create_bridge()
            await self._create_sink()
            await self._apply_service_table()
        except BaseException:
            await self.close()
            raise
        log.info("dns_backend_started", backend=self.name, instance=self.instance,
                 pods=str(self.layout.pods), services=str(self.layout.services))

    async def _create_bridge(self) -> None:
        layout = self.layout
        await run("ip", "link", "add", self.bridge, "type", "bridge")
        await run("ip", "-b", "-", stdin="\n".join([
            f"addr add {layout.gateway}/{layout.pods.prefixlen} dev {self.bridge}",
            f"link set {self.bridge} up",
            f"route add {layout.services} dev {self.bridge} src {layout.gateway}",
            f"route add {layout.nodes} dev {self.bridge} src {layout.gateway}",
            f"route add {layout.externals} dev {self.bridge} src {layout.gateway}",
        ]) + "\n")

    async def _create_sink(self) -> None:
        dropping, rejecting = self.layout.sinks
        await self._plumb_namespace(self._sink_netns, f"{self.instance}hs", rejecting)
        prefixlen = self.layout.pods.prefixlen
        await run("ip", "-n", self._sink_netns, "addr", "add", f"{dropping}/{prefixlen}",
                  "dev", "eth0")
        await run("ip", "netns", "exec", self._sink_netns, "nft", "-f", "-",
                  stdin=config.sink_ruleset(dropping))

    @property
    def _sink_netns(self) -> str:
        return f"{self.instance}-sink"

    async def close(self) -> None:
        claim, self._claim = self._claim, None
        if claim is None:
            return
        pods, self._pods = list(self._pods.values()), {}
        await asyncio.gather(*(self._teardown(pod) for pod in pods), return_exceptions=True)
        await run("ip", "link", "del", f"{claim.name}hs", check=False)
        await asyncio.to_thread(_kill_namespace, f"{claim.name}-sink")
        await run("nft", "delete", "table", "ip", claim.name, check=False)
        await run("ip", "link", "del", f"{claim.name}br", check=False)
        if claim.supernet is not None:
            await run("ip", "route", "del", "blackhole", str(claim.supernet),
                      "metric", str(ROUTE_METRIC), check=False)
        shutil.rmtree(STATE_DIR / claim.name, ignore_errors=True)
        (STATE_DIR / f"{claim.name}.lock").unlink(missing_ok=True)
        claim.lock.close()
        log.info("dns_backend_closed", backend=self.name, instance=claim.name)

    # -------------------------------------------------------------- addresses

    def allocate_pod_ip(self) -> str:
        try:
            return next(self._pod_ips)
        except StopIteration:
            raise RuntimeError("the netns backend is not started or has no pod "
                               "address left") from None

    def allocate_service_ip(self) -> str:
        try:
            return next(self._service_ips)
        except StopIteration:
            raise RuntimeError("the netns backend is not started or has no service "
                               "address left") from None

    def allocate_node_ip(self) -> str:
        try:
            return next(self._node_ips)
        except StopIteration:
            raise RuntimeError("the netns backend is not started or has no node "
                               "address left") from None

    def allocate_external_ip(self) -> str:
        try:
            return next(self._external_ips)
        except StopIteration:
            raise RuntimeError("the netns backend is not started or has no external "
                               "address left") from None

    # -------------------------------------------------------------- pods

    async def add_pod(self, pod: str, ip: str, zone: ZoneData) -> None:
        if ipaddress.IPv4Address(ip) not in self.layout.pods:
            raise ValueError(f"pod IP {ip} is outside this backend's pod range {self.layout.pods}")
        self._zone = zone
        await self.remove_pod(pod)
        number = next(self._pod_numbers)
        state = _Pod(pod, ip, f"{self.instance}-p{number}", f"{self.instance}h{number}",
                     self.workdir / f"p{number}")
        self._pods[pod] = state
        started = time.perf_counter()
        try:
            await self._plumb_namespace(state.netns, state.host_link, state.ip)
            await self._start_processes(state)
        except BaseException:
            self._pods.pop(pod, None)
            await self._teardown(state)
            raise
        seconds = time.perf_counter() - started
        self.pod_start_seconds.append(seconds)
        log.info("pod_dns_started", pod=pod, ip=ip, netns=state.netns, seconds=round(seconds, 3))

    async def _plumb_namespace(self, netns: str, host_link: str, ip: str) -> None:
        """A namespace with ``ip`` on a veth to the bridge; its ICMP errors are not
        rate-limited, so that every rejected query is answered."""
        await run("ip", "netns", "add", netns)
        await run("ip", "-b", "-", stdin=(
            f"link add {host_link} type veth peer name eth0 netns {netns}\n"
            f"link set {host_link} master {self.bridge} up\n"))
        await asyncio.gather(
            run("ip", "-n", netns, "-b", "-", stdin=(
                f"addr add {ip}/{self.layout.pods.prefixlen} dev eth0\n"
                "link set eth0 up\nlink set lo up\n"
                f"route add default via {self.layout.gateway}\n")),
            run("ip", "netns", "exec", netns, "sysctl", "-q", "-w", "net.ipv4.icmp_ratelimit=0"),
        )

    async def _start_processes(self, pod: _Pod) -> None:
        pod.directory.mkdir(mode=0o700)
        pod.config_path.write_text(config.unbound_config(pod.ip, pod.directory, self._zone,
                                                         pod.mode, self._nsid_of(pod)))
        pod.server = await _spawn_in(pod.netns, ["unbound", "-d", "-p", "-c", str(pod.config_path)],
                                     pod.directory / "server.log")
        pod.health = await _spawn_in(
            pod.netns, [sys.executable, "-I", "-S", str(_SCRIPTS / "health.py"), pod.ip,
                        str(HEALTH_PORT), str(self.port), str(READY_PORT)],
            pod.directory / "health.log")

        async def server_answers() -> bool:
            if pod.server is not None and pod.server.returncode is not None:
                log_text = (pod.directory / "server.log").read_text(errors="replace")
                raise CommandFailed(f"unbound for {pod.name} exited: {log_text.strip()}")
            return await udp_answers(pod.ip, self.port, self._zone.domain, 0.05)

        await asyncio.gather(
            _poll(server_answers, f"unbound of {pod.name}", START_TIMEOUT_SECONDS),
            _poll(lambda: tcp_accepts(pod.ip, HEALTH_PORT, 0.2), f"health port of {pod.name}",
                  START_TIMEOUT_SECONDS),
            _poll(lambda: tcp_accepts(pod.ip, READY_PORT, 0.2), f"ready port of {pod.name}",
                  START_TIMEOUT_SECONDS),
        )

    def _nsid_of(self, pod: _Pod) -> str | None:
        return pod.name if self.nsid else None

    async def _teardown(self, pod: _Pod) -> None:
        await asyncio.gather(_stop(pod.relay), _stop(pod.health), _stop(pod.server))
        await run("ip", "link", "del", pod.host_link, check=False)
        await asyncio.to_thread(_kill_namespace, pod.netns)
        shutil.rmtree(pod.directory, ignore_errors=True)

    async def remove_pod(self, pod: str) -> None:
        state = self._pods.pop(pod, None)
        if state is not None:
            await self._teardown(state)
            log.info("pod_dns_stopped", pod=pod, ip=state.ip, netns=state.netns)

    async def pod_alive(self, pod: str) -> bool:
        state = self._pods.get(pod)
        return state is not None and await http_ok(state.ip, READY_PORT, 1.0, "/ready")

    async def served_queries(self, pod: str) -> int:
        """Queries the pod's unbound has received (its own statistics)."""
        state = self._pods[pod]
        stats = await run("unbound-control", "-c", str(state.config_path), "stats_noreset")
        for line in stats.splitlines():
            key, _, value = line.partition("=")
            if key == "total.num.queries":
                return int(value)
        raise CommandFailed(f"unbound of {pod} reported no total.num.queries")

    async def _reconfigure(self, pod: _Pod) -> None:
        pod.config_path.write_text(config.unbound_config(pod.ip, pod.directory, self._zone,
                                                         pod.mode, self._nsid_of(pod)))
        await run("unbound-control", "-c", str(pod.config_path), "reload")

    async def update_zone(self, zone: ZoneData) -> None:
        self._zone = zone
        await asyncio.gather(*(self._reconfigure(pod) for pod in list(self._pods.values())))

    # -------------------------------------------------------------- faults

    async def set_pod_fault(self, pod: str, fault: Fault) -> None:
        state = self._pods.get(pod)
        if state is None:
            raise KeyError(f"no pod {pod!r} in the netns backend")
        mode = config.server_mode(fault)
        if mode is not state.mode:
            state.mode = mode
            await self._reconfigure(state)
        if fault.kind is FaultKind.DELAY:
            await self._ensure_relay(state, fault.value)
        await run("ip", "netns", "exec", state.netns, "nft", "-f", "-",
                  stdin=config.pod_ruleset(fault))
        if fault.kind is not FaultKind.DELAY:
            await _stop(state.relay)
            state.relay, state.relay_delay = None, None
        state.fault = fault
        log.info("pod_fault_set", pod=pod, fault=str(fault))

    async def _ensure_relay(self, pod: _Pod, delay_ms: float) -> None:
        if pod.relay is not None and pod.relay.returncode is None and pod.relay_delay == delay_ms:
            return
        await _stop(pod.relay)
        pod.relay = await _spawn_in(
            pod.netns, [sys.executable, "-I", "-S", str(_SCRIPTS / "relay.py"), pod.ip,
                        str(config.DELAY_RELAY_PORT), pod.ip, str(self.port), f"{delay_ms:g}"],
            pod.directory / "relay.log")
        pod.relay_delay = delay_ms
        await _poll(lambda: udp_answers(pod.ip, config.DELAY_RELAY_PORT, self._zone.domain,
                                        delay_ms / 1000 + 0.2),
                    f"delay relay of {pod.name}", START_TIMEOUT_SECONDS)

    # -------------------------------------------------------------- service

    async def set_service(self, cluster_ip: str, backends: Sequence[str]) -> None:
        if ipaddress.IPv4Address(cluster_ip) not in self.layout.services:
            raise ValueError(f"ClusterIP {cluster_ip} is outside {self.layout.services}")
        self._services[cluster_ip] = tuple(backends)
        await self._apply_service_table()
        log.info("service_routed", cluster_ip=cluster_ip, backends=list(backends))

    async def set_frontend(self, address: str, port: int, backends: Sequence[str]) -> None:
        where = ipaddress.IPv4Address(address)
        if where not in self.layout.nodes and where not in self.layout.externals:
            raise ValueError(f"frontend {address} is outside {self.layout.nodes} and "
                             f"{self.layout.externals}")
        if backends:
            self._frontends[(address, port)] = tuple(backends)
        elif self._frontends.pop((address, port), None) is None:
            return
        await self._apply_service_table()
        log.info("frontend_routed", address=address, port=port, backends=list(backends))

    async def set_service_fault(self, broken: bool) -> None:
        self._service_broken = broken
        await self._apply_service_table()
        log.info("service_fault_set", broken=broken)

    async def _apply_service_table(self) -> None:
        await run("nft", "-f", "-", stdin=config.service_ruleset(
            self.instance, self._services, self._service_broken, self.layout.sinks,
            str(self.layout.supernet), str(self.layout.pods), self._frontends))

    def client_hint(self) -> str:
        if self._layout is None:
            return "the netns backend is not started"
        first_pod = self.layout.pods[2]
        return (f"pods answer DNS on {self.layout.pods} port 53 from this host's namespace "
                f"(bridge {self.bridge}, health on :{HEALTH_PORT}/health, "
                f"ready on :{READY_PORT}/ready); ClusterIPs in {self.layout.services}; e.g. "
                f"dig @{first_pod} kubernetes.default.svc.{self.domain}")


def _conforms_to_the_contract(backend: NetnsBackend) -> DnsBackend:
    return backend  # mypy checks NetnsBackend against the DnsBackend protocol here
