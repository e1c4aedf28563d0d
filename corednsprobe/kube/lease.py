"""Leader election on a coordination.k8s.io/v1 Lease, and a store for annotations on it.

Owns: acquiring, renewing and releasing one Lease (holderIdentity, UTC
MicroTime acquireTime/renewTime, leaseDurationSeconds, leaseTransitions);
judging another holder's lease expired by local observation — the record did
not change for a whole lease duration on our own clock — never by comparing
our clock with theirs; stepping down before the lease can expire when
renewals fail. ``LeaderElector`` elects; it writes annotations only as a
change handed to it (``update_annotations``), through the same serialized,
resourceVersion-guarded PUTs as its renewals and only while leading.
``LeaseStore`` is the compare-and-swap store on top (the remediation history
lives there): a value is written only over the value its writer last saw.
Never does: decide or perform remediation; every replica probes whatever
this says.

Safety: leadership counts from the *start* of the last successful write, and
lapses ``renew_deadline`` after it, while another replica waits at least
``lease_duration`` after it saw that write; ``lease_duration > renew_deadline
> retry_period`` keeps the old leader silent before a new one can act.
A lost race (409 on a PUT or POST) is never retried blindly: the Lease is
read again and judged anew. Whatever else goes wrong in one attempt (a Lease
with ``spec: null``, a garbled answer, a reset connection) is logged and the
attempt is made again a retry period later; it never ends the election. A 403
is remembered (``refused``) so that the replica can say why it never leads.
"""

from __future__ import annotations

import asyncio
import secrets
import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any, NoReturn

from kubernetes_asyncio import client

from corednsprobe import logs
from corednsprobe.backoff import jittered
from corednsprobe.kube.client import ApiClient, ApiError, call

log = logs.get(__name__)
Change = Callable[[Mapping[str, str]], Mapping[str, str] | None]


@dataclass(frozen=True, slots=True)
class LeaseTiming:
    """client-go's defaults; tests shrink them."""

    lease_duration: float = 15.0
    renew_deadline: float = 10.0
    retry_period: float = 2.0

    def __post_init__(self) -> None:
        if not self.lease_duration > self.renew_deadline > 1.2 * self.retry_period > 0:
            raise ValueError("lease timing needs lease_duration > renew_deadline > "
                             f"1.2 x retry_period > 0, got {self}")


class MicroTime(datetime):
    """A UTC datetime that serializes as the API's MicroTime: always six fractional digits.

    ``datetime.isoformat`` drops the fraction at a whole second, and the API
    server's RFC3339Micro parser rejects that; the client serializes datetimes
    with ``isoformat``, so this one answers with the exact form.
    """

    def isoformat(self, sep: str = "T", timespec: str = "microseconds") -> str:
        return self.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def micro_time(unix: float) -> MicroTime:
    return MicroTime.fromtimestamp(unix, UTC)


def default_identity() -> str:
    """The pod name (the hostname in a pod) and a random suffix, unique per process."""
    return f"{socket.gethostname()}_{secrets.token_hex(4)}"


class LeaderElector:
    def __init__(
        self,
        api: ApiClient,
        namespace: str,
        name: str,
        *,
        identity: str | None = None,
        timing: LeaseTiming | None = None,
        wall: Callable[[], float] = time.time,
        on_change: Callable[[bool], None] = lambda _leading: None,
    ) -> None:
        self.leases = client.CoordinationV1Api(api)
        self.namespace = namespace
        self.name = name
        self.identity = identity or default_identity()
        self.timing = timing or LeaseTiming()
        self.wall = wall
        self._on_change = on_change
        self._lock = asyncio.Lock()
        self._lease: Any = None  # the V1Lease last read or written
        self._leading = False
        self._renewed_at = -float("inf")  # loop time a successful write started
        self._observed: tuple[Any, ...] = ()
        self._observed_at = 0.0
        self.refused = ""  # the API's 403 on the Lease, while it lasts

    # -- what others read ------------------------------------------------------------

    def is_leader(self) -> bool:
        """True only while the last successful write is younger than the renew deadline."""
        return self._leading and _now() < self._renewed_at + self.timing.renew_deadline

    @property
    def holder(self) -> str:
        return str(_spec(self._lease).holder_identity or "")

    @property
    def annotations(self) -> Mapping[str, str]:
        """The Lease's annotations as last read or written."""
        meta = getattr(self._lease, "metadata", None)
        return MappingProxyType(dict(getattr(meta, "annotations", None) or {}))

    # -- the loop --------------------------------------------------------------------

    async def run(self) -> NoReturn:
        """Acquire, then renew every retry period, until cancelled; release on the way out."""
        try:
            while True:
                async with self._lock:
                    await self._try_acquire_or_renew()
                self._step_down_if_lapsed()
                await asyncio.sleep(jittered(self.timing.retry_period))
        finally:
            await self._release()

    async def _try_acquire_or_renew(self) -> None:
        try:
            if self._leading and self._lease is not None and await self._write({}):
                return
            await self._read()
            if self._lease is None:
                await self._create()
            elif self._may_take():
                await self._write({})
        except Exception as exc:  # the API, the network, or a Lease not as expected
            if isinstance(exc, ApiError) and exc.status == 403:
                self.refused = exc.message
            self._log_failure("lease_request_failed", exc)

    def _may_take(self) -> bool:
        spec = _spec(self._lease)
        holder = spec.holder_identity or ""
        if not holder or holder == self.identity:
            return True
        duration = float(spec.lease_duration_seconds or self.timing.lease_duration)
        return _now() >= self._observed_at + duration

    def _step_down_if_lapsed(self) -> None:
        if self._leading and not self.is_leader():
            log.error("leadership_lapsed", lease=self.name, identity=self.identity,
                      deadline=self.timing.renew_deadline)
            self._set_leading(False)

    # -- requests --------------------------------------------------------------------

    async def _read(self) -> None:
        try:
            lease = await call(self.leases.read_namespaced_lease, self.name, self.namespace,
                               deadline=self.timing.renew_deadline)
        except ApiError as exc:
            if exc.status != 404:
                raise
            lease = None
        self.refused = ""
        self._remember(lease)
        if lease is not None and self._leading and self.holder != self.identity:
            log.warning("leadership_lost", lease=self.name, holder=self.holder)
            self._set_leading(False)

    async def _create(self) -> None:
        started, now = _now(), self.wall()
        body = client.V1Lease(
            metadata=client.V1ObjectMeta(name=self.name, namespace=self.namespace),
            spec=self._spec(now, acquire=now, transitions=0))
        try:
            lease = await call(self.leases.create_namespaced_lease, self.namespace, body,
                               deadline=self.timing.renew_deadline)
        except ApiError as exc:
            if exc.status == 409:
                log.info("lease_race_lost", lease=self.name, on="create")
                return
            raise
        self._won(lease, started)

    async def _write(self, annotations: Mapping[str, str]) -> bool:
        """PUT the Lease as ours with our last resourceVersion; False on a lost race."""
        started, now = _now(), self.wall()
        old = self._lease
        spec = _spec(old)
        ours = (spec.holder_identity or "") == self.identity
        acquire = spec.acquire_time if ours else None
        transitions = int(spec.lease_transitions or 0) + (0 if ours else 1)
        meta = client.V1ObjectMeta(
            name=self.name, namespace=self.namespace,
            resource_version=old.metadata.resource_version,
            annotations={**(old.metadata.annotations or {}), **annotations},
            labels=old.metadata.labels)
        body = client.V1Lease(metadata=meta, spec=self._spec(
            now, acquire=now if acquire is None else acquire, transitions=transitions))
        timeout = max(0.05, self._renewed_at + self.timing.renew_deadline - started) \
            if self._leading else self.timing.renew_deadline
        try:
            lease = await call(self.leases.replace_namespaced_lease, self.name,
                               self.namespace, body, deadline=timeout)
        except ApiError as exc:
            if exc.status == 409:
                log.info("lease_race_lost", lease=self.name, on="update")
                return False
            raise
        if not ours:
            log.info("lease_acquired", lease=self.name, identity=self.identity,
                     previous=spec.holder_identity or None, transitions=transitions)
        self._won(lease, started)
        return True

    def _spec(self, now: float, *, acquire: Any, transitions: int) -> Any:
        return client.V1LeaseSpec(
            holder_identity=self.identity,
            lease_duration_seconds=max(1, round(self.timing.lease_duration)),
            acquire_time=micro_time(acquire) if isinstance(acquire, float) else _as_micro(acquire),
            renew_time=micro_time(now), lease_transitions=transitions)

    async def _release(self) -> None:
        """Hand the Lease back so another replica need not wait out the duration.

        A write cancelled in flight may have landed, so a 409 here is answered by
        reading the Lease again and releasing it if it still names us.
        """
        leading = self.is_leader()
        self._set_leading(False)
        if not leading or self._lease is None:
            return
        try:
            async with asyncio.timeout(min(self.timing.renew_deadline, 5.0)):
                for _ in range(2):
                    if await self._put_released():
                        log.info("lease_released", lease=self.name, identity=self.identity)
                        return
                    await self._read()
                    if self.holder != self.identity:
                        return
        except Exception as exc:  # shutting down: log it, never raise from here
            log.warning("lease_release_failed", lease=self.name,
                        error=exc.message if isinstance(exc, ApiError) else str(exc)
                        or type(exc).__name__)

    async def _put_released(self) -> bool:
        old = self._lease
        body = client.V1Lease(
            metadata=client.V1ObjectMeta(
                name=self.name, namespace=self.namespace,
                resource_version=old.metadata.resource_version,
                annotations=old.metadata.annotations, labels=old.metadata.labels),
            spec=client.V1LeaseSpec(
                holder_identity=None, lease_duration_seconds=1,
                acquire_time=_as_micro(_spec(old).acquire_time),
                renew_time=micro_time(self.wall()),
                lease_transitions=_spec(old).lease_transitions))
        try:
            await call(self.leases.replace_namespaced_lease, self.name, self.namespace, body,
                       deadline=self.timing.renew_deadline)
        except ApiError as exc:
            if exc.status == 409:
                return False
            raise
        return True

    # -- writing annotations for others ---------------------------------------------

    async def update_annotations(self, change: Change) -> bool:
        """While leading, write the annotations ``change`` makes of the current ones.

        ``change`` returns the annotations to set, or None to leave the Lease as
        it is. A 409 means someone else wrote the Lease: it is read again, and
        ``change`` asked once more only if the Lease is still ours. True only
        when written.
        """
        async with self._lock:
            if not self.is_leader():
                return False
            try:
                wanted = change(self.annotations)
                if wanted is None:
                    return False
                if await self._write(wanted):
                    return True
                await self._read()
                if self.holder != self.identity:
                    return False
                wanted = change(self.annotations)
                return wanted is not None and await self._write(wanted)
            except Exception as exc:  # the API, the network, or a Lease not as expected
                self._log_failure("lease_annotation_failed", exc)
            return False

    def _log_failure(self, event: str, exc: Exception) -> None:
        if isinstance(exc, ApiError):
            log.warning(event, lease=self.name, status=exc.status, reason=exc.message)
        else:
            log.warning(event, lease=self.name, error=str(exc) or type(exc).__name__,
                        error_type=type(exc).__name__)

    # -- state -----------------------------------------------------------------------

    def _remember(self, lease: Any) -> None:
        self._lease = lease
        if lease is None:
            return
        spec = _spec(lease)
        key = (spec.holder_identity, _as_micro(spec.renew_time), spec.lease_duration_seconds)
        if key != self._observed:
            self._observed, self._observed_at = key, _now()

    def _won(self, lease: Any, started: float) -> None:
        self._remember(lease)
        self._renewed_at = started
        if not self._leading:
            self._set_leading(True)

    def _set_leading(self, leading: bool) -> None:
        if leading == self._leading:
            return
        self._leading = leading
        log.info("leadership_changed", lease=self.name, identity=self.identity, leading=leading)
        self._on_change(leading)


class LeaseStore:
    """Annotations on the elector's Lease as a compare-and-swap store, written only while
    the elector leads."""

    def __init__(self, elector: LeaderElector) -> None:
        self.elector = elector

    @property
    def annotations(self) -> Mapping[str, str]:
        return self.elector.annotations

    def get(self, key: str) -> str:
        """One annotation as last read ("" when absent)."""
        return self.annotations.get(key, "")

    async def write(self, annotations: Mapping[str, str],
                    expect: Mapping[str, str] | None = None) -> bool:
        """Store ``annotations``; with ``expect``, only over those values (a missing
        annotation reads as ""), so that a change by someone else is never overwritten."""
        def change(current: Mapping[str, str]) -> Mapping[str, str] | None:
            ok = all(current.get(k, "") == v for k, v in (expect or {}).items())
            return annotations if ok else None

        return await self.elector.update_annotations(change)

    async def put(self, key: str, value: str, *, expect: str) -> bool:
        """Store ``value`` under ``key`` only over ``expect``."""
        return await self.write({key: value}, expect={key: expect})


def _spec(lease: Any) -> Any:
    """The Lease's spec; an empty one for a Lease written with ``spec: null``."""
    return getattr(lease, "spec", None) or client.V1LeaseSpec()


def _as_micro(value: Any) -> MicroTime | None:
    """The time the client read back (a datetime, or a string it could not parse)."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if not isinstance(value, datetime):
        return None
    aware = value if value.tzinfo else value.replace(tzinfo=UTC)
    return micro_time(aware.timestamp())


def _now() -> float:
    return asyncio.get_running_loop().time()
