"""Cluster access that explains itself: credentials, reachability, permissions.

Owns: choosing in-cluster credentials or a kubeconfig, proving the API answers
and accepts us, and asking it (SelfSubjectAccessReview) for every permission
the configured features need, naming the RBAC rule that grants each missing
one. Never does: read or watch the DNS objects themselves.
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from kubernetes_asyncio import client, config
from kubernetes_asyncio.config.kube_config import KubeConfigLoader

from corednsprobe.kube.client import ApiClient, ApiError, call
from corednsprobe.kube.kubeconfig import KubeconfigError
from corednsprobe.kube.kubeconfig import candidate_paths as kubeconfig_candidates
from corednsprobe.kube.kubeconfig import existing as existing_kubeconfigs
from corednsprobe.kube.kubeconfig import merge as merge_kubeconfigs

TOKEN_PATH = Path("/var/run/secrets/kubernetes.io/serviceaccount/token")
NAMESPACE_PATH = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
SSAR_DEADLINE = 15.0


class ClusterAccessError(Exception):
    """The cluster cannot be reached or will not accept us; the CLI exits 3."""


TLS_CLOSE_SECONDS = 0.25  # as aiohttp's documentation advises for a graceful shutdown


class ClusterBusy(ClusterAccessError):
    """The API server answered, but with a server error or "too many requests" (5xx, 429).

    Such an answer says nothing about our address, credentials or permissions:
    a long-running command waits and asks again instead of exiting.
    """


@dataclass
class Access:
    api: ApiClient
    url: str
    source: str  # "in-cluster service account" or the kubeconfig path
    context: str
    auth: str  # how we authenticate, for people

    @property
    def in_cluster(self) -> bool:
        """True when the credentials are the pod's own service account."""
        return self.source == "in-cluster service account"

    def describe(self) -> str:
        ctx = f", context {self.context!r}" if self.context else ""
        return f"API {self.url} (credentials: {self.source}{ctx}; auth: {self.auth})"

    async def close(self) -> None:
        """Close the client session, and give its TLS connections the moment they need to
        finish closing while the loop still runs (else uvloop reports a "Fatal error on
        SSL protocol" for a connection that closes as the loop ends)."""
        await self.api.close()
        await asyncio.sleep(TLS_CLOSE_SECONDS)


@dataclass(frozen=True, slots=True)
class Permission:
    verb: str
    resource: str
    namespace: str
    group: str = ""
    subresource: str = ""
    purpose: str = ""
    required: bool = True
    name: str = ""  # one object only (RBAC resourceNames); "" means any

    @property
    def what(self) -> str:
        res = f"{self.resource}/{self.subresource}" if self.subresource else self.resource
        grp = self.group or "core"
        named = f" {self.name!r}" if self.name else ""
        return f"{self.verb} {res}{named} ({grp}) in namespace {self.namespace}"

    @property
    def rule(self) -> str:
        res = f"{self.resource}/{self.subresource}" if self.subresource else self.resource
        names = f'resourceNames: ["{self.name}"], ' if self.name else ""
        return (f'Role in {self.namespace}: apiGroups: ["{self.group}"], '
                f'resources: ["{res}"], {names}verbs: ["{self.verb}"]')


@dataclass(frozen=True, slots=True)
class PermissionReport:
    missing_required: tuple[Permission, ...] = ()
    missing_optional: tuple[Permission, ...] = field(default=())

    @property
    def ok(self) -> bool:
        return not self.missing_required


def read_permissions(namespace: str, legacy_endpoints: bool = False) -> list[Permission]:
    """What watching the DNS Service needs."""
    if legacy_endpoints:
        eps = [Permission(v, "endpoints", namespace, purpose="watch the DNS endpoints")
               for v in ("list", "watch")]
    else:
        eps = [Permission(v, "endpointslices", namespace, "discovery.k8s.io",
                          purpose="watch the DNS endpoints") for v in ("list", "watch")]
    return [
        *eps,
        *(Permission(v, "services", namespace, purpose="read the DNS Service's ClusterIP")
          for v in ("list", "watch")),
        *(Permission(v, "services", "default", purpose="read default/kubernetes (the truth)")
          for v in ("list", "watch")),
        *(Permission(v, "pods", namespace, purpose="see pod age and termination")
          for v in ("list", "watch")),
    ]


def prober_namespace(configured: str, fallback: str, path: Path = NAMESPACE_PATH) -> str:
    """The prober's own namespace: as configured, else its service account's, else fallback."""
    if configured:
        return configured
    try:
        found = path.read_text().strip()
    except OSError:
        found = ""
    return found or fallback


def remediation_permissions(mode: str, namespace: str, lease_namespace: str,
                            lease_name: str = "", legacy_endpoints: bool = False,
                            ) -> list[Permission]:
    """What restarting pods in ``mode`` needs: the Lease, the fresh read of the pod, the
    Service and its endpoints before a restart (dry-run too), the write, and
    (optionally) Events.

    get and update name the Lease (``lease_name``), so a Role that limits them
    with resourceNames passes the check; create cannot be limited by name.
    """
    if mode == "off":
        return []
    purpose = "elect one leader and keep the remediation history"
    wanted = [Permission(v, "leases", lease_namespace, "coordination.k8s.io",
                         purpose=purpose, name=lease_name if v != "create" else "")
              for v in ("get", "create", "update")]
    fresh = "read a pod, its Service and endpoints fresh before restarting it"
    wanted += [Permission("get", "pods", namespace, purpose=fresh),
               Permission("get", "services", namespace, purpose=fresh),
               Permission("get", "endpoints", namespace, purpose=fresh) if legacy_endpoints
               else Permission("list", "endpointslices", namespace, "discovery.k8s.io",
                               purpose=fresh)]
    if mode == "evict":
        wanted.append(Permission("create", "pods", namespace, subresource="eviction",
                                 purpose="evict sick CoreDNS pods"))
    elif mode == "delete":
        wanted.append(Permission("delete", "pods", namespace, purpose="delete sick CoreDNS pods"))
    wanted.append(Permission("create", "events", namespace, required=False,
                             purpose="report probe failures and restarts as Events"))
    return wanted + vantage_permissions(lease_namespace)


def vantage_permissions(prober_namespace: str) -> list[Permission]:
    """What the leader needs to find the other replicas (vantages): the EndpointSlices of
    the prober's own Service, in the prober's namespace. Without them it is one vantage."""
    return [Permission(v, "endpointslices", prober_namespace, "discovery.k8s.io",
                       required=False, purpose="find the other replicas to pull their views "
                       "from (the prober's own Service)") for v in ("list", "watch")]


def _kubeconfig_files(kubeconfig: str | None) -> list[str]:
    """The kubeconfig files to merge; ClusterAccessError (exit 3) if none exists."""
    wanted = kubeconfig_candidates(kubeconfig, os.environ)
    found = existing_kubeconfigs(wanted)
    if not found:
        in_pod = "set" if os.environ.get("KUBERNETES_SERVICE_HOST") else "unset"
        named = ", ".join(repr(p) for p in wanted)
        raise ClusterAccessError(
            f"found no cluster credentials: no kubeconfig at {named}, and no "
            f"in-cluster service account (KUBERNETES_SERVICE_HOST is {in_pod}). Pass "
            "--kubeconfig PATH or set KUBECONFIG, run it in a pod with a service account, or "
            "try it without a cluster: `corednsprobe demo`."
        )
    return found


def _in_cluster(kubeconfig: str | None, context: str | None) -> bool:
    """In a pod, unless the user named a kubeconfig or context explicitly."""
    if kubeconfig or context or not os.environ.get("KUBERNETES_SERVICE_HOST"):
        return False
    return TOKEN_PATH.exists()


async def connect(kubeconfig: str | None = None, context: str | None = None) -> Access:
    """Load credentials and prove the API server answers and accepts them."""
    cfg = client.Configuration()
    in_cluster = _in_cluster(kubeconfig, context)
    try:
        if in_cluster:
            config.load_incluster_config(client_configuration=cfg)  # type: ignore[no-untyped-call]
            source, ctx = "in-cluster service account", ""
        else:
            files = _kubeconfig_files(kubeconfig)
            source = os.pathsep.join(files)
            loader = KubeConfigLoader(config_dict=merge_kubeconfigs(files),
                                      config_base_path=None, active_context=context)
            await loader.load_and_set(cfg)
            ctx = str((getattr(loader, "current_context", None) or {}).get("name", context or ""))
    except (config.ConfigException, OSError, ValueError, KeyError, TypeError,
            KubeconfigError) as exc:
        tried = "in-cluster service account" if in_cluster else f"kubeconfig {source!r}"
        raise ClusterAccessError(
            f"could not load cluster credentials from the {tried}"
            f"{f' (context {context!r})' if context else ''}: {exc}. Check that the file "
            "exists and names a current context, or pass --kubeconfig/--context; inside a "
            "cluster, check that the pod mounts its service-account token."
        ) from None
    auth = _auth_kind(cfg)
    access = Access(client.ApiClient(configuration=cfg), str(cfg.host), source, ctx, auth)
    try:
        await _prove(access)
    except ClusterAccessError:
        await access.close()
        raise
    return access


def _auth_kind(cfg: Any) -> str:
    key = (cfg.api_key or {}).get("authorization") or (cfg.api_key or {}).get("BearerToken")
    if key:
        return "bearer token"
    if cfg.cert_file:
        return "client certificate"
    if cfg.username:
        return "basic auth"
    return "none"


async def _prove(access: Access) -> None:
    """One authenticated request: a SelfSubjectAccessReview needs a known user."""
    try:
        await ssar(access.api, Permission("get", "namespaces", "default"))
    except ApiError as exc:
        if exc.status == 403:
            raise ClusterAccessError(
                f"reached {access.describe()}, and it knows who we are, but we may not "
                f"create selfsubjectaccessreviews (authorization.k8s.io): {exc.status} "
                f"{exc.reason}: {exc.message}. This is a missing permission, not bad "
                "credentials: every authenticated user has it through the built-in "
                "ClusterRole system:basic-user (bound to system:authenticated); restore that "
                "binding, or grant: ClusterRole: apiGroups: [\"authorization.k8s.io\"], "
                "resources: [\"selfsubjectaccessreviews\"], verbs: [\"create\"]"
            ) from None
        if exc.status == 401:
            raise ClusterAccessError(
                f"reached {access.describe()}, but the API server refused the "
                f"credentials: {exc.status} {exc.reason}: {exc.message}. Check that the token "
                "or client certificate is current (an expired token, a deleted service "
                "account, or a kubeconfig for another cluster all look like this)."
            ) from None
        busy = exc.status == 429 or exc.status >= 500
        raise (ClusterBusy if busy else ClusterAccessError)(
            f"reached {access.describe()}, but it answered "
            f"{exc.status} {exc.reason}: {exc.message}."
        ) from None
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        raise ClusterAccessError(
            f"could not reach {access.describe()}: {exc or type(exc).__name__}. "
            "Check that the address is right and reachable from here (VPN, firewall, "
            "`kubectl cluster-info` with the same kubeconfig), and that the API server is up."
        ) from None


async def ssar(api: ApiClient, p: Permission) -> bool:
    """Ask the API whether we may do ``p`` (SelfSubjectAccessReview)."""
    review = client.V1SelfSubjectAccessReview(
        api_version="authorization.k8s.io/v1", kind="SelfSubjectAccessReview",
        spec=client.V1SelfSubjectAccessReviewSpec(resource_attributes=client.V1ResourceAttributes(
            namespace=p.namespace, verb=p.verb, group=p.group, resource=p.resource,
            subresource=p.subresource or None, name=p.name or None)))
    answer = await call(client.AuthorizationV1Api(api).create_self_subject_access_review,
                        review, deadline=SSAR_DEADLINE)
    return bool(getattr(answer.status, "allowed", False))


async def check_permissions(api: ApiClient, wanted: list[Permission]) -> PermissionReport:
    missing = [p for p in wanted if not await ssar(api, p)]
    return PermissionReport(
        tuple(p for p in missing if p.required), tuple(p for p in missing if not p.required)
    )


def explain_missing(report: PermissionReport, identity: str) -> str:
    """One paragraph for people: each missing permission and the rule that grants it."""
    lines = [f"lacks permissions it needs ({identity}):"]
    for p in report.missing_required:
        lines.append(f"  - {p.what}: needed to {p.purpose}. Grant: {p.rule}")
    return "\n".join(lines)
