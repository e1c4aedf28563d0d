"""The probe agent's two texts: the spec it is started with, and its result lines.

Owns: the one JSON argument of ``corednsprobe agent`` (packed as ``z:`` and the
base64 of its zlib compression when longer than 32 KiB, since Linux takes no
argument longer than 128 KiB; the targets and the checks
the outside process decided from the API's truth, the interval, the timeout and
how long to run), reading it back strictly (a ``SpecError`` says what is wrong),
one compact JSON line per ProbeResult, and reading such a line back into a
ProbeResult of the outside process's own Target and Check.
Never does: probe, talk to the API or decide which checks a target gets.

A result line (``v`` is the format's version)::

    {"v":1,"kind":"pod","address":"10.244.0.5","port":53,"uid":"…","target":"coredns-x",
     "check":"kubernetes","outcome":"ok","rcode":"NOERROR","answers":["10.96.0.1"],
     "rtt":0.00042,"udp_only":false,"at":1764539000.123,"qname":"kubernetes.default.svc.…",
     "detail":"","flags":["qr","aa","rd"],"records":["…"]}

The first line an agent prints is ``{"v":1,"hello":"corednsprobe agent <version>",
"targets":N,"jobs":M}``: the agent is running; it is no result.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from corednsprobe.addr import normal_address
from corednsprobe.model import (
    Check,
    ClusterState,
    Outcome,
    PodRef,
    ProbeResult,
    Target,
    TargetKey,
    TargetKind,
    TargetSet,
)

VERSION = 1
REACH = "probe-pod"
PACKED = "z:"  # a spec as base64 of its zlib-compressed JSON
PACK_OVER = 32 * 1024  # bytes of JSON from which the argument is packed
ARG_MAX = 128 * 1024 - 1  # Linux's MAX_ARG_STRLEN: the longest one argument can be
_OUTCOMES = {o.value: o for o in Outcome}


class SpecError(ValueError):
    """The agent's spec is not what this version reads; the text says what and where."""


class LineError(ValueError):
    """A line of the agent's output that is not a result this process can read."""


class UnknownJob(LineError):
    """A well-formed result of a target or check this process no longer probes (a line
    of an agent started for an earlier TargetSet)."""


@dataclass(frozen=True, slots=True)
class AgentSpec:
    """What one agent pod probes, how often and for how long."""

    targets: TargetSet
    checks: Mapping[TargetKey, tuple[Check, ...]]
    interval: float
    timeout: float
    duration: float  # seconds; the agent exits 0 after this
    max_in_flight: int
    domain: str
    namespace: str
    phase: float | None = None  # unix seconds: rounds start at phase + k·interval

    @property
    def jobs(self) -> int:
        return sum(len(c) for c in self.checks.values())


def check_dict(check: Check) -> dict[str, Any]:
    return {"name": check.name, "qname": check.qname, "qtype": check.qtype,
            "expect": None if check.expect_addresses is None
            else sorted(check.expect_addresses),
            "rcode": check.expect_rcode, "search": list(check.search), "ndots": check.ndots,
            "app": check.application_view, "upstream": check.upstream}


def spec_text(targets: Iterable[tuple[Target, tuple[Check, ...]]], *, interval: float,
              timeout: float, duration: float, max_in_flight: int, domain: str,
              namespace: str, phase: float | None = None) -> str:
    """The agent's one argument: every target with the names of its checks, and each
    distinct check once (compact JSON)."""
    checks: dict[str, dict[str, Any]] = {}
    listed = []
    for target, its in targets:
        for check in its:
            drawn = check_dict(check)
            if checks.setdefault(check.name, drawn) != drawn:
                raise ValueError(f"two different checks are both called {check.name!r}")
        listed.append({"kind": target.kind.value, "name": target.name,
                       "address": target.address, "port": target.port,
                       "uid": target.pod.uid if target.pod is not None else "",
                       "checks": [c.name for c in its]})
    return json.dumps({"v": VERSION, "interval": interval, "timeout": timeout,
                       "duration": duration, "max_in_flight": max_in_flight,
                       **({} if phase is None else {"phase": round(phase, 6)}),
                       "domain": domain, "namespace": namespace,
                       "checks": list(checks.values()), "targets": listed},
                      separators=(",", ":"))


def pack(text: str) -> str:
    """The argument for ``text``: itself, or packed when long (ValueError when even
    packed it is longer than one argument may be)."""
    if len(text) <= PACK_OVER:
        return text
    packed = PACKED + base64.b64encode(zlib.compress(text.encode(), 9)).decode()
    if len(packed) > ARG_MAX:
        raise ValueError(f"the agent's spec is {len(packed)} bytes packed, more than one "
                         f"argument may be ({ARG_MAX})")
    return packed


def _unpack(text: str) -> str:
    if not text.startswith(PACKED):
        return text
    try:
        return zlib.decompress(base64.b64decode(text[len(PACKED):], validate=True)).decode()
    except (binascii.Error, zlib.error, UnicodeDecodeError) as exc:
        raise SpecError(f"a packed spec ('{PACKED}…') that does not unpack: {exc}") from None


def _field(obj: Mapping[str, Any], key: str, kind: type | tuple[type, ...], where: str,
           default: Any = ...) -> Any:
    if key not in obj:
        if default is ...:
            raise SpecError(f"{where}: {key!r} is missing")
        return default
    value = obj[key]
    if isinstance(value, bool) and kind is not bool and bool not in (
            kind if isinstance(kind, tuple) else (kind,)):
        raise SpecError(f"{where}: {key!r} must be {_kind_name(kind)}, not {value!r}")
    if not isinstance(value, kind):
        raise SpecError(f"{where}: {key!r} must be {_kind_name(kind)}, not {value!r}")
    return value


def _kind_name(kind: type | tuple[type, ...]) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    names = {int: "a number", float: "a number", str: "a string", bool: "true or false",
             list: "a list", dict: "an object", type(None): "null"}
    return " or ".join(dict.fromkeys(names.get(k, k.__name__) for k in kinds))


def _positive(obj: Mapping[str, Any], key: str) -> float:
    value = float(_field(obj, key, (int, float), "spec"))
    if not math.isfinite(value) or value <= 0:
        raise SpecError(f"spec: {key!r} must be a positive number of seconds, not {value!r}")
    return value


def _check(raw: Any, i: int) -> Check:
    where = f"checks[{i}]"
    if not isinstance(raw, dict):
        raise SpecError(f"{where} must be an object")
    expect = _field(raw, "expect", (list, type(None)), where, None)
    if expect is not None and (not expect or not all(isinstance(a, str) for a in expect)):
        raise SpecError(f"{where}: 'expect' must be null or a non-empty list of addresses")
    search = _field(raw, "search", list, where, [])
    if not all(isinstance(s, str) for s in search):
        raise SpecError(f"{where}: 'search' must be a list of domain names")
    name = _field(raw, "name", str, where)
    if not name:
        raise SpecError(f"{where}: 'name' must not be empty")
    qname = _field(raw, "qname", str, where)
    if not qname:
        raise SpecError(f"{where}: 'qname' must not be empty")
    return Check(name, qname, _field(raw, "qtype", str, where, "A"),
                 frozenset(normal_address(a) for a in expect) if expect is not None else None,
                 _field(raw, "rcode", str, where, "NOERROR"), tuple(search),
                 int(_field(raw, "ndots", int, where, 1)),
                 _field(raw, "app", bool, where, False),
                 _field(raw, "upstream", bool, where, False))


def _target(raw: Any, i: int) -> tuple[Target, list[str]]:
    where = f"targets[{i}]"
    if not isinstance(raw, dict):
        raise SpecError(f"{where} must be an object")
    kind_text = _field(raw, "kind", str, where)
    try:
        kind = TargetKind(kind_text)
    except ValueError:
        raise SpecError(f"{where}: 'kind' must be 'pod' or 'service', not {kind_text!r}") from None
    address = _field(raw, "address", str, where)
    if not _is_ip(address):
        raise SpecError(f"{where}: 'address' must be an IP address, not {address!r}")
    port = _field(raw, "port", int, where, 53)
    if not 1 <= port <= 65535:
        raise SpecError(f"{where}: 'port' must be 1-65535, not {port!r}")
    names = _field(raw, "checks", list, where)
    if not names or not all(isinstance(n, str) for n in names):
        raise SpecError(f"{where}: 'checks' must be a non-empty list of check names")
    pod = None
    if kind is TargetKind.POD:
        name = _field(raw, "name", str, where)
        if not name:
            raise SpecError(f"{where}: a pod target needs its 'name'")
        pod = PodRef(name, uid=_field(raw, "uid", str, where, ""))
    return Target(kind, normal_address(address), port, pod), names


def _is_ip(text: str) -> bool:
    import ipaddress

    try:
        ipaddress.ip_address(text.strip("[]"))
    except ValueError:
        return False
    return True


def parse_spec(text: str) -> AgentSpec:
    """Read the agent's argument; SpecError naming the first thing that is wrong."""
    try:
        raw = json.loads(_unpack(text))
    except ValueError as exc:
        if isinstance(exc, SpecError):
            raise
        raise SpecError(f"not JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise SpecError("the spec must be a JSON object")
    version = raw.get("v")
    if version != VERSION:
        raise SpecError(f"spec: 'v' is {version!r}; this agent reads version {VERSION}")
    interval, timeout, duration = (_positive(raw, k) for k in ("interval", "timeout", "duration"))
    max_in_flight = _field(raw, "max_in_flight", int, "spec", 1024)
    if max_in_flight < 1:
        raise SpecError(f"spec: 'max_in_flight' must be at least 1, not {max_in_flight}")
    checks_raw = _field(raw, "checks", list, "spec")
    checks: dict[str, Check] = {}
    for i, c in enumerate(checks_raw):
        check = _check(c, i)
        if check.name in checks:
            raise SpecError(f"checks[{i}]: a second check called {check.name!r}")
        checks[check.name] = check
    targets_raw = _field(raw, "targets", list, "spec")
    if not targets_raw:
        raise SpecError("spec: 'targets' is empty: there is nothing to probe")
    table: dict[TargetKey, tuple[Check, ...]] = {}
    pods: list[Target] = []
    services: list[Target] = []
    for i, t in enumerate(targets_raw):
        target, names = _target(t, i)
        unknown = [n for n in names if n not in checks]
        if unknown:
            raise SpecError(f"targets[{i}]: no check called {unknown[0]!r} in 'checks'")
        if target.key in table:
            raise SpecError(f"targets[{i}]: {target.endpoint} is listed twice")
        table[target.key] = tuple(checks[n] for n in names)
        (pods if target.kind is TargetKind.POD else services).append(target)
    ts = TargetSet(tuple(pods), tuple(services), state=ClusterState.OK, generation=1)
    return AgentSpec(ts, table, interval, timeout, duration, max_in_flight,
                     _field(raw, "domain", str, "spec", "cluster.local"),
                     _field(raw, "namespace", str, "spec", "kube-system"), _phase(raw))


def _phase(raw: Mapping[str, Any]) -> float | None:
    value = _field(raw, "phase", (int, float, type(None)), "spec", None)
    if value is not None and not math.isfinite(value):
        raise SpecError(f"spec: 'phase' must be a time in unix seconds, not {value!r}")
    return None if value is None else float(value)


def hello_line(version: str, spec: AgentSpec) -> bytes:
    return json.dumps({"v": VERSION, "hello": f"corednsprobe agent {version}",
                       "targets": len(spec.targets.targets), "jobs": spec.jobs},
                      separators=(",", ":")).encode() + b"\n"


def result_line(r: ProbeResult) -> bytes:
    """One ProbeResult as one compact JSON line (newline included)."""
    t = r.target
    return json.dumps({
        "v": VERSION, "kind": t.kind.value, "address": t.address, "port": t.port,
        "uid": t.pod.uid if t.pod is not None else "", "target": t.name,
        "check": r.check.name, "outcome": r.outcome.value, "rcode": r.rcode,
        "answers": r.answers, "rtt": r.rtt_seconds, "udp_only": r.udp_only, "at": r.at,
        "qname": r.qname, "detail": r.detail, "flags": r.flags, "records": r.records,
    }, separators=(",", ":")).encode() + b"\n"


class Lookup:
    """The outside process's own Targets and Checks, by what a result line names."""

    __slots__ = ("_checks", "_targets")

    def __init__(self, jobs: Iterable[tuple[Target, tuple[Check, ...]]]) -> None:
        self._targets: dict[TargetKey, Target] = {}
        self._checks: dict[tuple[TargetKey, str], Check] = {}
        for target, checks in jobs:
            self._targets[target.key] = target
            for check in checks:
                self._checks[(target.key, check.name)] = check

    def read(self, line: bytes | str) -> ProbeResult | None:
        """The ProbeResult of one line; None for the agent's hello; LineError for a
        line that is not a result of a target and check this process asked for."""
        try:
            raw = json.loads(line)
        except ValueError:
            raise LineError("not JSON") from None
        if not isinstance(raw, dict):
            raise LineError("not a JSON object")
        if raw.get("v") != VERSION:
            raise LineError(f"version {raw.get('v')!r}, not {VERSION}")
        if "hello" in raw:
            return None
        try:
            key = (raw["kind"], raw["address"], raw["port"], raw["uid"])
            target = self._targets.get(key)
            if target is None:
                raise UnknownJob(f"no such target {key[0]} {key[1]}:{key[2]}")
            check = self._checks.get((key, raw["check"]))
            if check is None:
                raise UnknownJob(f"no check {raw['check']!r} for {target.name}")
            outcome = _OUTCOMES.get(raw["outcome"])
            if outcome is None:
                raise LineError(f"unknown outcome {raw['outcome']!r}")
            rtt = raw["rtt"]
            return ProbeResult(
                target, check, outcome, rcode=raw["rcode"], answers=tuple(raw["answers"]),
                rtt_seconds=float(rtt) if rtt is not None else None,
                udp_only=bool(raw["udp_only"]), at=float(raw["at"]), qname=str(raw["qname"]),
                detail=str(raw["detail"]), flags=tuple(raw["flags"]),
                records=tuple(raw["records"]), reach=REACH)
        except (KeyError, TypeError, ValueError) as exc:
            if isinstance(exc, LineError):
                raise
            raise LineError(f"not a result line ({type(exc).__name__}: {exc})") from None
