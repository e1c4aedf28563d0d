"""``Sandbox``: a whole stand-in cluster in one async context manager.

Owns: composing a DNS backend, the store, the API server, the controllers
and the control API; the seed objects (namespaces, the nodes, the ``coredns``
Deployment, the ``kube-dns`` and ``default/kubernetes`` Services, an optional
PDB, the ``default`` ServiceAccounts and the bootstrap ``system:basic-user``
RBAC); minting ServiceAccount tokens; the fault hooks as a Python API;
writing kubeconfigs. Never does: leave anything running after ``__aexit__``,
even when startup failed half-way.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import secrets
import shutil
import ssl
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from aiohttp import web

from corednsprobe import logs
from corednsprobe.sandbox import control
from corednsprobe.sandbox.apiserver import ApiFaults, ApiServer, WatchTimings
from corednsprobe.sandbox.auth import ADMIN_RULES, Authorizer, Rule
from corednsprobe.sandbox.backend import DnsBackend, Fault
from corednsprobe.sandbox.controllers import (
    DEPLOYMENTS,
    PDBS,
    PODS,
    SERVICES,
    SLICES,
    Controllers,
    PodFaults,
    Timings,
    slot_of,
)
from corednsprobe.sandbox.nodes import MAX_NODES, default_node_count, node_body
from corednsprobe.sandbox.nullbackend import NullBackend
from corednsprobe.sandbox.rbac import (
    BASIC_USER_BINDING,
    BASIC_USER_ROLE,
    CLUSTER_ROLE_BINDINGS,
    CLUSTER_ROLES,
    SERVICE_ACCOUNTS,
    Rbac,
    service_account_user,
)
from corednsprobe.sandbox.registry import NAMESPACES, NODES, Registry, pod_ready
from corednsprobe.sandbox.store import Store, now_iso
from corednsprobe.sandbox.tls import make_certificate, server_context
from corednsprobe.sandbox.workloads import ProcessPods

Obj = dict[str, Any]
log = logs.get(__name__)

DNS_LABELS = {"k8s-app": "kube-dns"}
POD_LOG = (".:53\n[INFO] plugin/reload: Running configuration SHA512 = sandbox\n"
           "CoreDNS-1.11.3\nlinux/amd64, go1.23.3, sandbox\n")


@dataclass
class SandboxConfig:
    replicas: int = 2
    nodes: int | None = None  # None: the backend's default (1 inprocess, 3 otherwise)
    domain: str = "cluster.local"
    host: str = "127.0.0.1"
    port: int = 0
    termination_grace_seconds: int = 30
    pdb_min_available: int | str | None = None  # None: no PodDisruptionBudget
    history_limit: int = 10_000
    timings: Timings = field(default_factory=Timings)
    watch: WatchTimings = field(default_factory=WatchTimings)
    admin_token: str = ""  # empty: a random one
    tls: bool = True  # kubectl sends bearer tokens only over HTTPS
    nsid: bool = False  # DNS pods answer EDNS NSID with their pod name
    # The project's Deployment pods run as probers in their node's vantage namespace
    # (netns backend). Off, they are recorded only, so applying deploy/ for its Roles
    # starts no prober that would take the Lease and act beside the one under test.
    run_probers: bool = False
    # Group versions the API does not serve (404), as on a cluster older than they are:
    # ("discovery.k8s.io/v1",) leaves only legacy v1 Endpoints.
    unserved_group_versions: tuple[str, ...] = ()


def _coredns_deployment(config: SandboxConfig, port: int, health_port: int = 8080,
                        ready_port: int = 8181) -> Obj:
    container = {
        "name": "coredns", "image": "registry.k8s.io/coredns/coredns:v1.11.3",
        "imagePullPolicy": "IfNotPresent", "args": ["-conf", "/etc/coredns/Corefile"],
        "ports": [{"containerPort": port, "name": "dns", "protocol": "UDP"},
                  {"containerPort": port, "name": "dns-tcp", "protocol": "TCP"},
                  {"containerPort": 9153, "name": "metrics", "protocol": "TCP"}],
        "livenessProbe": {"httpGet": {"path": "/health", "port": health_port, "scheme": "HTTP"},
                          "initialDelaySeconds": 60, "timeoutSeconds": 5,
                          "successThreshold": 1, "failureThreshold": 5},
        "readinessProbe": {"httpGet": {"path": "/ready", "port": ready_port, "scheme": "HTTP"},
                           "timeoutSeconds": 1, "successThreshold": 1, "failureThreshold": 3},
        "resources": {"limits": {"memory": "170Mi"},
                      "requests": {"cpu": "100m", "memory": "70Mi"}},
    }
    return {
        "metadata": {"name": "coredns", "namespace": "kube-system", "labels": dict(DNS_LABELS)},
        "spec": {
            "replicas": config.replicas,
            "selector": {"matchLabels": dict(DNS_LABELS)},
            "strategy": {"type": "RollingUpdate",
                         "rollingUpdate": {"maxUnavailable": 1, "maxSurge": "25%"}},
            "template": {
                "metadata": {"labels": dict(DNS_LABELS)},
                "spec": {"priorityClassName": "system-cluster-critical",
                         "serviceAccountName": "coredns", "dnsPolicy": "Default",
                         "terminationGracePeriodSeconds": config.termination_grace_seconds,
                         "containers": [container]},
            },
        },
    }


def _kube_dns_service(port: int) -> Obj:
    return {
        "metadata": {"name": "kube-dns", "namespace": "kube-system",
                     "labels": {"k8s-app": "kube-dns", "kubernetes.io/cluster-service": "true",
                                "kubernetes.io/name": "CoreDNS"},
                     "annotations": {"prometheus.io/port": "9153",
                                     "prometheus.io/scrape": "true"}},
        "spec": {"selector": dict(DNS_LABELS),
                 "ports": [{"name": "dns", "port": port, "protocol": "UDP", "targetPort": port},
                           {"name": "dns-tcp", "port": port, "protocol": "TCP",
                            "targetPort": port},
                           {"name": "metrics", "port": 9153, "protocol": "TCP",
                            "targetPort": 9153}]},
    }


_KUBERNETES_SERVICE = {
    "metadata": {"name": "kubernetes", "namespace": "default",
                 "labels": {"component": "apiserver", "provider": "kubernetes"}},
    "spec": {"ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": 6443}]},
}


class Sandbox:
    def __init__(self, backend: DnsBackend | None = None, config: SandboxConfig | None = None,
                 ) -> None:
        self.config = config or SandboxConfig()
        self.backend: DnsBackend = backend or NullBackend(domain=self.config.domain)
        if self.config.nsid:
            self.backend.nsid = True
        self.node_count = self.config.nodes or default_node_count(self.backend.name)
        if not 1 <= self.node_count <= MAX_NODES:
            raise ValueError(f"nodes: {self.node_count}: expected 1 to {MAX_NODES}")
        self.admin_token = self.config.admin_token or f"sandbox-admin-{secrets.token_hex(12)}"
        self.store = Store(self.config.history_limit)
        self.registry = Registry(self.store, self.backend.allocate_service_ip)
        self.authorizer = Authorizer()
        self.authorizer.add_token(self.admin_token, "sandbox-admin", ADMIN_RULES)
        self.rbac = Rbac(self.store)
        self.authorizer.add_resolver(self._service_account_principal)
        self._work_dir = Path(tempfile.mkdtemp(prefix="cdpa-sandbox-pods-"))
        self.processes = ProcessPods(self._work_dir / "logs")
        self.api_faults = ApiFaults()
        self.pod_faults = PodFaults()
        self.api = ApiServer(self.store, self.registry, self.authorizer, self.config.watch,
                             self.api_faults, POD_LOG,
                             frozenset(self.config.unserved_group_versions),
                             token_minter=self.rbac.mint, processes=self.processes)
        self.controllers = Controllers(self.store, self.registry, self.backend,
                                       self.config.timings, self.config.domain, self.pod_faults)
        self.api.dns_port = self.backend.port
        self.controllers.processes = self.processes
        self.controllers.credentials = self._pod_credentials
        self.controllers.run_probers = self.config.run_probers
        self.controllers.vantage_credentials = (
            lambda pod: self._pod_credentials(pod, self.pod_api_url))
        self.port = 0
        self._runner: web.AppRunner | None = None
        self._controllers_task: asyncio.Task[None] | None = None
        self._service_broken = False
        self._tls_dir: Path | None = None
        self.ca_pem = b""

    # lifecycle -------------------------------------------------------------

    async def __aenter__(self) -> Sandbox:
        try:
            await self.start()
        except BaseException:
            await self.close()
            raise
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.close()

    async def start(self) -> None:
        await self.backend.start()
        self._seed()
        await self.controllers.sync_zone()
        self._controllers_task = asyncio.create_task(self.controllers.run(),
                                                     name="sandbox-controllers")
        app = web.Application()
        self.api.routes(app)
        control.routes(app, self)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        tls = await self._tls_context()
        site = web.TCPSite(self._runner, self.config.host, self.config.port, ssl_context=tls)
        await site.start()
        self.port = self._runner.addresses[0][1]
        # where vantage pods reach it, unless a wildcard listener covers it already
        if self.pod_api_address not in ("", self.config.host, "0.0.0.0", "::"):
            await web.TCPSite(self._runner, self.pod_api_address, self.port,
                              ssl_context=tls).start()
        log.info("sandbox_started", url=self.url, backend=self.backend.name)

    @property
    def pod_api_address(self) -> str:
        """Where pods in network namespaces reach the API (the netns backend's bridge
        address), or "" when pods run in this host's network."""
        return str(getattr(self.backend, "api_address", "") or "")

    async def _tls_context(self) -> ssl.SSLContext | None:
        if not self.config.tls:
            return None
        self._tls_dir = Path(tempfile.mkdtemp(prefix="cdpa-sandbox-tls-"))
        also = (self.pod_api_address,) if self.pod_api_address else ()
        cert, key = await make_certificate(self._tls_dir, self.config.host, also)
        self.ca_pem = cert.read_bytes()
        return server_context(cert, key)

    async def close(self) -> None:
        await self.api.close()
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()
        if self._controllers_task is not None:
            task, self._controllers_task = self._controllers_task, None
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self.processes.close()
        await self.backend.close()
        shutil.rmtree(self._work_dir, ignore_errors=True)
        if self._tls_dir is not None:
            shutil.rmtree(self._tls_dir, ignore_errors=True)
            self._tls_dir = None
        log.info("sandbox_stopped")

    def _seed(self) -> None:
        for name in ("default", "kube-system", "kube-public", "kube-node-lease"):
            self.registry.create(NAMESPACES, "", {"metadata": {"name": name}})
        for namespace in ("default", "kube-system", "kube-public", "kube-node-lease"):
            self.registry.create(SERVICE_ACCOUNTS, namespace, {"metadata": {"name": "default"}})
        self.registry.create(SERVICE_ACCOUNTS, "kube-system", {"metadata": {"name": "coredns"}})
        self.registry.create(CLUSTER_ROLES, "", BASIC_USER_ROLE)
        self.registry.create(CLUSTER_ROLE_BINDINGS, "", BASIC_USER_BINDING)
        for index in range(self.node_count):
            self.registry.create(NODES, "", node_body(index, self.backend.allocate_node_ip(),
                                                      now_iso()))
        self.registry.create(SERVICES, "default", _KUBERNETES_SERVICE)
        self.registry.create(SERVICES, "kube-system", _kube_dns_service(self.backend.port))
        self.registry.create(DEPLOYMENTS, "kube-system",
                             _coredns_deployment(self.config, self.backend.port,
                                                 self.backend.health_port,
                                                 self.backend.ready_port))
        if self.config.pdb_min_available is not None:
            self.registry.create(PDBS, "kube-system", {
                "metadata": {"name": "coredns", "namespace": "kube-system",
                             "labels": dict(DNS_LABELS)},
                "spec": {"minAvailable": self.config.pdb_min_available,
                         "selector": {"matchLabels": dict(DNS_LABELS)}}})

    # reading ---------------------------------------------------------------

    def nodes(self) -> list[Obj]:
        return list(self.store.items(NODES))

    def node_addresses(self) -> dict[str, str]:
        """Node name → InternalIP."""
        return {n["metadata"]["name"]: a["address"] for n in self.nodes()
                for a in n["status"]["addresses"] if a["type"] == "InternalIP"}

    @property
    def url(self) -> str:
        scheme = "https" if self.config.tls else "http"
        return f"{scheme}://{self.config.host}:{self.port}"

    @property
    def pod_api_url(self) -> str:
        """The API's URL as a pod in a network namespace reaches it."""
        scheme = "https" if self.config.tls else "http"
        return f"{scheme}://{self.pod_api_address}:{self.port}"

    def dns_pods(self) -> list[Obj]:
        """The CoreDNS pods (terminating ones included), by name."""
        return [p for p in self.store.items(PODS, "kube-system")
                if (p["metadata"].get("labels") or {}).get("k8s-app") == "kube-dns"]

    def pod_for_slot(self, slot: int) -> Obj | None:
        return next((p for p in self.dns_pods() if slot_of(p) == slot
                     and not p["metadata"].get("deletionTimestamp")), None)

    def service(self, namespace: str, name: str) -> Obj:
        return self.store.must_get(SERVICES, namespace, name)

    def ready_endpoints(self) -> list[str]:
        addresses = []
        for piece in self.store.items(SLICES, "kube-system"):
            if (piece["metadata"].get("labels") or {}).get("kubernetes.io/service-name") \
                    != "kube-dns":
                continue
            for endpoint in piece.get("endpoints") or ():
                if endpoint["conditions"].get("ready"):
                    addresses.extend(endpoint["addresses"])
        return addresses

    async def wait_ready(self, count: int | None = None, within: float = 30.0) -> list[Obj]:
        """Wait until ``count`` (default: replicas) DNS pods are ready and published."""
        wanted = self.config.replicas if count is None else count
        async with asyncio.timeout(within):
            while True:
                ready = [p for p in self.dns_pods()
                         if pod_ready(p) and not p["metadata"].get("deletionTimestamp")]
                if len(ready) == wanted and len(self.ready_endpoints()) == wanted:
                    return ready
                await asyncio.sleep(0.02)

    def state(self) -> Obj:
        """A summary for people and the control API."""
        pods = []
        for pod in self.dns_pods():
            name = pod["metadata"]["name"]
            pods.append({
                "name": name, "slot": slot_of(pod), "ip": pod["status"].get("podIP"),
                "node": pod["spec"].get("nodeName"),
                "ready": pod_ready(pod), "terminating": bool(pod["metadata"].get(
                    "deletionTimestamp")),
                "fault": str(self.pod_faults.effective(name, slot_of(pod)))})
        return {"url": self.url, "backend": self.backend.name, "port": self.backend.port,
                "nodes": self.node_addresses(),
                "clusterIP": self.service("kube-system", "kube-dns")["spec"].get("clusterIP"),
                "pods": pods, "serviceBroken": self._service_broken,
                "resourceVersion": self.store.rv}

    # kubeconfig ------------------------------------------------------------

    def write_kubeconfig(self, path: str | os.PathLike[str], token: str | None = None,
                         namespace: str = "kube-system", server: str = "") -> Path:
        """A kubeconfig for kubectl and kubernetes_asyncio (context ``sandbox``);
        ``server`` instead of this host's URL (for a pod in a namespace)."""
        target = Path(path)
        authority = ""
        if self.ca_pem:
            authority = ("    certificate-authority-data: "
                         f"{base64.b64encode(self.ca_pem).decode()}\n")
        text = (
            "apiVersion: v1\nkind: Config\n"
            f"clusters:\n- name: sandbox\n  cluster:\n    server: {server or self.url}\n{authority}"
            f"users:\n- name: sandbox\n  user:\n    token: {token or self.admin_token}\n"
            "contexts:\n- name: sandbox\n  context:\n    cluster: sandbox\n"
            f"    user: sandbox\n    namespace: {namespace}\n"
            "current-context: sandbox\npreferences: {}\n")
        target.write_text(text)
        target.chmod(0o600)
        return target

    # service accounts ------------------------------------------------------

    def _service_account_principal(self, token: str) -> tuple[str, Any] | None:
        identity = self.rbac.identity(token)
        if identity is None:
            return None
        return identity.user, lambda: self.rbac.rules_for(identity)

    def _pod_credentials(self, pod: Obj, server: str = "") -> dict[str, str]:
        """A project-image pod acts as its ServiceAccount: KUBECONFIG with its token
        (unless automountServiceAccountToken is false or the account is missing);
        ``server``: the API's URL as that pod reaches it."""
        spec, namespace = pod["spec"], pod["metadata"]["namespace"]
        account = spec.get("serviceAccountName") or "default"
        if spec.get("automountServiceAccountToken") is False or \
                self.store.get(SERVICE_ACCOUNTS, namespace, account) is None:
            return {}
        path = self._work_dir / f"{namespace}_{pod['metadata']['name']}.kubeconfig"
        self.write_kubeconfig(path, token=self.mint_token(namespace, account),
                              namespace=namespace, server=server)
        return {"KUBECONFIG": str(path)}

    def mint_token(self, namespace: str, name: str) -> str:
        """A token of the ServiceAccount ``namespace/name`` (which must exist): it is
        authorized by exactly the RBAC rules bound to that account, read live."""
        return self.rbac.mint(namespace, name)

    def write_service_account_kubeconfig(self, path: str | os.PathLike[str], namespace: str,
                                         name: str) -> Path:
        """A kubeconfig that acts as ``system:serviceaccount:<namespace>:<name>``."""
        written = self.write_kubeconfig(path, token=self.mint_token(namespace, name),
                                        namespace=namespace)
        log.info("service_account_kubeconfig", user=service_account_user(namespace, name),
                 path=str(written))
        return written

    # faults ----------------------------------------------------------------

    def add_token(self, token: str, user: str, rules: Iterable[Rule]) -> None:
        self.authorizer.add_token(token, user, rules)

    def deny(self, token: str, verb: str, resource: str, group: str = "") -> None:
        self.authorizer.deny(token, verb, resource, group)

    async def set_pod_fault(self, pod: str, fault: Fault | str) -> None:
        chosen = Fault.parse(fault) if isinstance(fault, str) else fault
        self.pod_faults.by_pod[pod] = chosen
        await self.controllers.apply_faults()

    async def set_slot_fault(self, slot: int, fault: Fault | str) -> None:
        """A fault that follows slot ``slot`` across pod replacements."""
        chosen = Fault.parse(fault) if isinstance(fault, str) else fault
        self.pod_faults.by_slot[slot] = chosen
        await self.controllers.apply_faults()

    async def set_all_pods_fault(self, fault: Fault | str) -> None:
        chosen = Fault.parse(fault) if isinstance(fault, str) else fault
        self.pod_faults.every_pod = chosen
        self.pod_faults.by_pod.clear()
        self.pod_faults.by_slot.clear()
        await self.controllers.apply_faults()

    async def set_service_broken(self, broken: bool) -> None:
        self._service_broken = broken
        await self.backend.set_service_fault(broken)

    def compact_history(self) -> None:
        self.store.compact()

    def stall_watches(self, stalled: bool = True) -> None:
        if stalled:
            self.api_faults.flowing.clear()
        else:
            self.api_faults.flowing.set()

    def reset_connections(self, next_watches: int = 0) -> int:
        """Abort open watches now (and the next ``next_watches`` right after their headers)."""
        self.api_faults.reset_new_watches = next_watches
        return self.api.reset_open_watches()

    def fail_requests(self, count: int, code: int = 500, path_contains: str = "") -> None:
        self.api_faults.fail_remaining = count
        self.api_faults.fail_code = code
        self.api_faults.fail_path = path_contains

    def set_watch_expiry(self, mode: str) -> None:
        if mode not in ("expired", "gone", "http"):
            raise ValueError(f"watch expiry mode {mode!r}: expected expired, gone or http")
        self.api_faults.expiry_mode = mode

    def pause_pdb_status(self, paused: bool = True) -> None:
        """Stop (or resume) the disruption controller, so PDB status goes stale."""
        self.controllers.pdb_paused = paused
