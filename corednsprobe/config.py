"""Settings: every knob of corednsprobe, read from ``COREDNSPROBE_*`` variables.

Owns: the one declaration of each setting (type, default, valid values, doc),
validation of the whole environment at once, and the reference table printed
from those declarations (README and the man page carry it; a test keeps them
equal).
Never does: I/O beyond reading the environment mapping it is given.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from corednsprobe.addr import split_host_port
from corednsprobe.stats import Z_CHECK, failure_lower_bound

ENV_PREFIX = "COREDNSPROBE_"

Parser = Callable[[str], Any]


@dataclass(frozen=True, slots=True)
class Spec:
    """How one setting is read: its parser and what a valid value looks like."""

    parse: Parser
    valid: str
    doc: str


def _seconds(lo: float, hi: float) -> Spec:
    def parse(raw: str) -> float:
        value = float(raw)
        if not math.isfinite(value) or not lo <= value <= hi:
            raise ValueError
        return value

    return Spec(parse, f"seconds, a number from {lo:g} to {hi:g}", "")


def _integer(lo: int, hi: int) -> Spec:
    def parse(raw: str) -> int:
        value = int(raw, 10)
        if not lo <= value <= hi:
            raise ValueError
        return value

    return Spec(parse, f"a whole number from {lo} to {hi}", "")


def _ratio(lo: float = 0.0, hi: float = 1.0) -> Spec:
    spec = _seconds(lo, hi)
    return Spec(spec.parse, f"a number from {lo:g} to {hi:g}", "")


def _choice(*values: str) -> Spec:
    def parse(raw: str) -> str:
        value = raw.strip().lower()
        if value not in values:
            raise ValueError
        return value

    return Spec(parse, "one of " + ", ".join(values), "")


_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")


def _domain() -> Spec:
    def parse(raw: str) -> str:
        value = raw.strip().lower().rstrip(".")
        if not value or len(value) > 253 or not all(_LABEL.match(p) for p in value.split(".")):
            raise ValueError
        return value

    return Spec(parse, "a DNS domain such as cluster.local", "")


_DNS1123 = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


def parse_k8s_name(raw: str) -> str:
    """A Kubernetes (DNS-1123 label) name, surrounding blanks trimmed; ValueError if not."""
    value = raw.strip()
    if not _DNS1123.match(value):
        raise ValueError(f"{raw!r} is not a Kubernetes name")
    return value


def _k8s_name() -> Spec:
    return Spec(parse_k8s_name,
                "a Kubernetes name: lower-case letters, digits and '-', 1-63 chars", "")


def _object_name() -> Spec:
    """A node or pod name: a DNS-1123 subdomain (labels joined by dots, 253 chars)."""
    def parse(raw: str) -> str:
        value = raw.strip()
        if len(value) > 253 or not all(_DNS1123.match(p) for p in value.split(".")):
            raise ValueError
        return value

    return Spec(parse, "a Kubernetes object name: lower-case letters, digits, '-' and '.'", "")


def _optional(inner: Spec) -> Spec:
    def parse(raw: str) -> Any:
        return "" if not raw.strip() else inner.parse(raw)

    return Spec(parse, f"empty, or {inner.valid}", "")


def _listen() -> Spec:
    return Spec(split_host_port, "HOST:PORT, e.g. 0.0.0.0:9180 or [::]:9180", "")


_IMAGE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/:@+-]{0,254}$")


def _image(raw: str) -> str:
    value = raw.strip()
    if not _IMAGE.match(value):
        raise ValueError
    return value


def setting(default: Any, spec: Spec, doc: str, unset: str = "") -> Any:
    """Declare one setting: its default, how it is parsed, and what it does.

    ``unset`` says, for a setting whose default is None, what holds when it is not set.
    """
    return dataclasses.field(
        default=default, metadata={"spec": Spec(spec.parse, spec.valid, doc), "unset": unset}
    )


# COREDNSPROBE_LISTEN when it is not set: every interface where the cluster's
# Prometheus scrapes us, loopback elsewhere (/status shows pod IPs, nodes, history).
LISTEN_IN_CLUSTER = ("0.0.0.0", 9180)
LISTEN_ELSEWHERE = ("127.0.0.1", 9180)


@dataclass(frozen=True, slots=True)
class Settings:
    """The effective configuration. Build it with :meth:`from_env`."""

    timeout: float = setting(
        1.0, _seconds(0.01, 30), "Deadline of one DNS probe; a later reply is a timeout."
    )
    interval: float = setting(
        5.0, _seconds(0.1, 3600), "Time between the starts of two probe rounds."
    )
    cluster_domain: str = setting(
        "cluster.local", _domain(), "The cluster's DNS domain (kubelet --cluster-domain)."
    )
    namespace: str = setting(
        "kube-system", _k8s_name(), "Namespace of the CoreDNS Service and pods."
    )
    service: str = setting("kube-dns", _k8s_name(), "Name of the CoreDNS Service.")
    window: float = setting(
        60.0, _seconds(1, 86400), "Sliding window over which each target is judged."
    )
    failure_ratio: float = setting(
        0.5,
        _ratio(0.01, 1),
        "A target is unhealthy when its window shows, with 95% confidence, at least this "
        "share of failures.",
    )
    min_samples: int = setting(
        5, _integer(1, 100000), "Fewest outcomes in the window before a target is judged."
    )
    recovery_successes: int = setting(
        3, _integer(1, 1000), "Successes in a row that make an unhealthy target healthy again."
    )
    min_pod_age: float = setting(
        30.0, _seconds(0, 86400), "Pods younger than this are in grace: probed, never judged."
    )
    max_unhealthy_fraction: float = setting(
        0.49,
        _ratio(0, 1),
        "More unhealthy pods than this share (or no healthy pod) means a shared cause: "
        "nothing is restarted. One sick pod beside a healthy one is always a pod problem.",
    )
    external_name: str = setting(
        "",
        _optional(_domain()),
        "A name outside the cluster to resolve through every pod (upstream check); empty: off.",
    )
    max_in_flight: int = setting(
        256, _integer(1, 65536), "Most probes outstanding at once."
    )
    remediation: str = setting(
        "evict",
        _choice("evict", "delete", "dry-run", "off"),
        "How sick pods are restarted: evict (honours PodDisruptionBudgets), delete, "
        "dry-run (decide and report only) or off.",
    )
    cooldown: float = setting(
        300.0, _seconds(0, 86400), "Least time between any two remediations."
    )
    max_restarts_per_hour: int = setting(
        3, _integer(0, 1000), "Most remediations in any hour; 0 restarts nothing."
    )
    min_ready: int = setting(
        1, _integer(1, 1000), "Never take the ready CoreDNS pods below this many."
    )
    give_up_after: int = setting(
        3,
        _integer(1, 100),
        "Remediations of one workload that brought no recovery before it stops and escalates.",
    )
    confirm: float = setting(
        10.0,
        _seconds(0, 3600),
        "A pod must stay a restart candidate this long, without a break, before it is "
        "restarted; any other verdict meanwhile starts it afresh.",
    )
    settle_period: float = setting(
        300.0,
        _seconds(0, 86400),
        "Health must hold this long after a restart for it to count as having brought health "
        "back; a relapse sooner counts towards giving up.",
    )
    reach: str = setting(
        "auto",
        _choice("auto", "direct", "exposed", "probe-pod", "port-forward"),
        "How probes reach the pods: direct (UDP to every pod IP and the ClusterIP), exposed "
        "(a NodePort/LoadBalancer Service of the DNS pods), probe-pod (a short-lived agent pod "
        "in the cluster), port-forward (DNS over TCP through the API server); auto picks the "
        "first that works in that order (see corednsprobe-deploy(7)).",
    )
    probe_image: str = setting(
        "corednsprobe",
        Spec(lambda raw: _image(raw), "an image reference, e.g. registry/corednsprobe:1.0", ""),
        "Image of the agent pod of the probe-pod strategy (this project's image).",
    )
    probe_pods: int = setting(
        0,
        _integer(0, 50),
        "Agent pods of the probe-pod strategy, each pinned to its own schedulable node and "
        "each a vantage; 0: COREDNSPROBE_QUORUM of them. One agent when the quorum is 1 or "
        "the cluster has one schedulable node.",
    )
    exposed_service: str = setting(
        "",
        _optional(_k8s_name()),
        "NodePort/LoadBalancer Service the exposed strategy probes; empty: found by its "
        "selector (the DNS Service's) and a UDP port 53.",
    )
    quorum: int = setting(
        2,
        _integer(1, 1000),
        "Vantages on this many distinct nodes must see a pod unhealthy before it is "
        "restarted (capped at the vantages holding a fresh verdict on it).",
    )
    vantage_service: str = setting(
        "corednsprobe",
        _optional(_k8s_name()),
        "The prober's own Service (in its namespace): the leader pulls each replica's verdicts "
        "(GET /vantage) from the pod IPs its EndpointSlices list, and from nowhere else; "
        "empty: one vantage, this replica's own.",
    )
    node_name: str = setting(
        "",
        _optional(_object_name()),
        "The node this replica runs on (the downward API's spec.nodeName); empty: NODE_NAME, "
        "else the node the EndpointSlice gives this replica's pod.",
    )
    pod_name: str = setting(
        "",
        _optional(_object_name()),
        "This replica's pod name (the downward API's metadata.name), the identity its "
        "/vantage answer claims; empty: POD_NAME, else the host name.",
    )
    lease_name: str = setting(
        "corednsprobe", _k8s_name(), "Lease for leader election and the remediation history."
    )
    prober_namespace: str = setting(
        "",
        _optional(_k8s_name()),
        "Namespace of the prober (its Lease); empty: the service account's namespace in a "
        "pod, else COREDNSPROBE_NAMESPACE.",
    )
    listen: tuple[str, int] | None = setting(
        None,
        _listen(),
        "Address of the HTTP server (/metrics, /status, /healthz). Unset: every interface "
        "when running on the in-cluster service account, loopback only elsewhere (a "
        "workstation with a kubeconfig does not expose /status).",
        unset=f"{LISTEN_ELSEWHERE[0]}:{LISTEN_ELSEWHERE[1]}, in a cluster "
        f"{LISTEN_IN_CLUSTER[0]}:{LISTEN_IN_CLUSTER[1]}",
    )
    log_level: str = setting(
        "info", _choice("debug", "info", "warning", "error"), "Lowest log level written."
    )
    log_format: str = setting(
        "auto",
        _choice("auto", "json", "console"),
        "Log format; auto is console on a terminal, JSON lines elsewhere.",
    )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read and validate every setting; raise one error naming every bad one."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        problems: list[Problem] = []
        for f in dataclasses.fields(cls):
            name = env_name(f.name)
            raw = env.get(name)
            if raw is None:
                continue
            spec: Spec = f.metadata["spec"]
            try:
                values[f.name] = spec.parse(raw)
            except (ValueError, TypeError):
                problems.append(Problem(name, raw, spec.valid))
        known = {env_name(f.name) for f in dataclasses.fields(cls)}
        for name in sorted(k for k in env if k.startswith(ENV_PREFIX) and k not in known):
            if not is_service_link(name, env[name]):
                problems.append(
                    Problem(name, env[name], "a known setting (see `corednsprobe config`)"))
        if problems:
            raise SettingsError(problems)
        settings = cls(**values)
        problems = settings._contradictions()
        if problems:
            raise SettingsError(problems)
        return settings

    def _contradictions(self) -> list[Problem]:
        """Values valid alone that together would never judge a dead target.

        Each check is judged on its own window as well (``judge.tracker``), so
        that a check failing every time is caught while the others pass: its
        window holds window / interval outcomes, and all of them failing must
        reach the ratio at the per-check confidence.
        """
        n = int(self.window / self.interval)
        held = (f"the window holds {n} outcomes of each check ({env_name('window')} / "
                f"{env_name('interval')})")
        problems = []
        if self.min_samples > n:
            problems.append(Problem(env_name("min_samples"), str(self.min_samples),
                                    f"at most {n}: {held}"))
        elif failure_lower_bound(n, n, Z_CHECK) < self.failure_ratio:
            problems.append(Problem(
                env_name("failure_ratio"), f"{self.failure_ratio:g}",
                f"at most {math.floor(failure_lower_bound(n, n, Z_CHECK) * 100) / 100:.2f}: "
                f"{held}, and even all of them failing shows no more than that with 99% "
                "confidence; widen the window or lower the ratio"))
        return problems

    def as_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    def listen_address(self, in_cluster: bool) -> tuple[str, int]:
        """COREDNSPROBE_LISTEN if set, else by place: in a cluster or elsewhere."""
        if self.listen is not None:
            return self.listen
        return LISTEN_IN_CLUSTER if in_cluster else LISTEN_ELSEWHERE


# The kubelet injects <SERVICE>_SERVICE_HOST, <SERVICE>_PORT_9180_TCP_ADDR and the
# like for every Service in the pod's namespace; a Service named corednsprobe
# (or corednsprobe-*) makes them look like our settings.
_LINK_NAME = re.compile(
    r"^COREDNSPROBE_(?:[A-Z0-9_]+_)?(?:SERVICE_HOST|SERVICE_PORT(?:_[A-Z0-9_]+)?"
    r"|PORT(?:_\d+_(?:TCP|UDP|SCTP)(?:_(?:PROTO|PORT|ADDR))?)?)$"
)
_LINK_URL = re.compile(r"^(?:tcp|udp|sctp)(?:://\[?[0-9A-Fa-f.:]+\]?:\d+)?$")


def is_service_link(name: str, value: str) -> bool:
    """A Docker-style service link the kubelet injected, not a setting."""
    if not _LINK_NAME.match(name):
        return False
    value = value.strip()
    if value.isdigit() or _LINK_URL.match(value):
        return True
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def env_name(field_name: str) -> str:
    return ENV_PREFIX + field_name.upper()


@dataclass(frozen=True, slots=True)
class Problem:
    variable: str
    value: str
    valid: str

    def __str__(self) -> str:
        return f"{self.variable}={self.value!r} is not valid: expected {self.valid}"


class SettingsError(ValueError):
    """One or more environment variables are malformed; start-up must stop."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


def _show(value: Any) -> str:
    if isinstance(value, tuple):
        return ":".join(str(v) for v in value) if len(value) == 2 else ",".join(map(str, value))
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def markdown_table() -> str:
    """The settings reference, as README includes it."""
    rows = ["| variable | default | valid values | what it does |", "|---|---|---|---|"]
    for f in dataclasses.fields(Settings):
        spec: Spec = f.metadata["spec"]
        rows.append(f"| `{env_name(f.name)}` | `{_default(f)}` | {spec.valid} | {spec.doc} |")
    return "\n".join(rows) + "\n"


def _default(f: dataclasses.Field[Any], value: Any = dataclasses.MISSING) -> str:
    """A setting's value (its default unless given) as people read it."""
    value = f.default if value is dataclasses.MISSING else value
    return str(f.metadata["unset"]) if value is None else _show(value)


def effective(settings: Settings, environ: Mapping[str, str]) -> list[tuple[str, str, str]]:
    """(variable, value, source) of the settings in force, for `corednsprobe config`;
    the source is "environment" when ``environ`` sets the variable, else "default"."""
    return [(env_name(f.name), _default(f, getattr(settings, f.name)),
             "environment" if env_name(f.name) in environ else "default")
            for f in dataclasses.fields(settings)]


def troff_settings() -> str:
    """The settings reference as man(7) paragraphs, for docs/corednsprobe.1."""
    out = []
    for f in dataclasses.fields(Settings):
        spec: Spec = f.metadata["spec"]
        default = _default(f) or "(empty)"
        out.append(f".TP\n.B {env_name(f.name)}\n{_troff(spec.doc)}\nDefault: {_troff(default)}; "
                   f"valid: {_troff(spec.valid)}.")
    return "\n".join(out) + "\n"


def _troff(text: str) -> str:
    escaped = text.replace("\\", "\\e").replace("-", "\\-")
    return "\\&" + escaped if escaped[:1] in (".", "'") else escaped
