"""Pods that are not CoreDNS: the project's own image run for real, and images
the sandbox cannot pull.

Owns: telling a pod's kind from its first container's image (a CoreDNS image
is a DNS server through the backend; the project's own image, ``corednsprobe``
under any registry or tag, runs its ``command``/``args`` as a local process
when its restartPolicy is Never or OnFailure; any other image never starts),
the container statuses a real kubelet reports for each (``ErrImagePull`` then
``ImagePullBackOff`` while Pending; ``running``, then ``terminated`` with the
exit code; ``DeadlineExceeded`` past ``activeDeadlineSeconds``), the process's
output kept as the container log (read through a pipe and written line by line
with its arrival time, in the CRI log format the kubelet reads:
``<RFC3339Nano> stdout F|P <line>``), reading it back with ``tailLines``,
``sinceSeconds`` and ``timestamps`` as pkg/kubelet/kuberuntime/logs does, and
the texts of the kubelet's log errors (pkg/kubelet/kubelet_pods.go
validateContainerLogStatus). Never does: touch the store (the controllers
write what this module computes); run any image but the project's; run a
process anywhere but as a child of this one.
"""

from __future__ import annotations

import asyncio
import calendar
import contextlib
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

Obj = dict[str, Any]

PROJECT_IMAGE = "corednsprobe"
DEADLINE_MESSAGE = "Pod was active on the node longer than the specified deadline"
_KEPT_ENV = ("PATH", "PYTHONPATH", "HOME", "LANG", "LC_ALL", "TZ")
_READ_CHUNK = 65536


def rfc3339_nano(ns: int) -> str:
    """Unix nanoseconds as the kubelet prints a log line's time (UTC, nine digits)."""
    seconds, fraction = divmod(ns, 1_000_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{fraction:09d}Z"


def parse_rfc3339_nano(text: str) -> int:
    """The inverse of :func:`rfc3339_nano` (a CRI log record's time)."""
    seconds = calendar.timegm(time.strptime(text[:19], "%Y-%m-%dT%H:%M:%S"))
    digits = text[20:].rstrip("Z")
    return seconds * 1_000_000_000 + int(digits.ljust(9, "0")[:9] or 0)


@dataclass(frozen=True)
class LogOptions:
    """The read side of PodLogOptions the sandbox honours."""

    tail: int | None = None  # tailLines
    since_ns: int | None = None  # sinceSeconds, as the earliest line time (unix ns)
    timestamps: bool = False


def cri_record(ns: int, line: bytes) -> bytes:
    """One CRI log record: a whole line (tag F, newline dropped) or the last,
    unterminated piece of output (tag P)."""
    if line.endswith(b"\n"):
        return f"{rfc3339_nano(ns)} stdout F ".encode() + line
    return f"{rfc3339_nano(ns)} stdout P ".encode() + line + b"\n"


def render(records: Iterable[bytes], options: LogOptions) -> bytes:
    """CRI records (each ending in a newline) → what ``pods/log`` returns: the
    lines at or after ``since``, each with its time and a space if asked."""
    out = []
    for record in records:
        stamp, _, rest = record.partition(b" ")
        _stream, _, rest = rest.partition(b" ")
        tag, _, content = rest.partition(b" ")
        if options.since_ns is not None and \
                parse_rfc3339_nano(stamp.decode()) < options.since_ns:
            continue
        if tag == b"P":
            content = content[:-1]
        out.append(stamp + b" " + content if options.timestamps else content)
    return b"".join(out)


class PodKind(StrEnum):
    DNS = "dns"  # a CoreDNS image: the backend serves DNS at the pod IP
    PROCESS = "process"  # the project's image: a real local process
    VANTAGE = "vantage"  # the project's image, restartPolicy Always, where the backend has
    # node namespaces: the prober process in its node's namespace, with that address
    UNPULLABLE = "unpullable"  # anything else: Pending, ImagePullBackOff


def image_name(image: str) -> str:
    """``registry/path/name:tag@digest`` → ``name``."""
    without_digest = image.split("@", 1)[0]
    last = without_digest.rsplit("/", 1)[-1]
    return last.split(":", 1)[0]


def pod_kind(pod: Obj, vantages: bool = False) -> PodKind:
    """What the sandbox runs for ``pod``; ``vantages``: the backend gives each node a
    namespace where the project's long-running pods (its Deployment) run."""
    containers = (pod.get("spec") or {}).get("containers") or [{}]
    image = str(containers[0].get("image") or "")
    name = image_name(image)
    if name == PROJECT_IMAGE:
        if (pod.get("spec") or {}).get("restartPolicy") in ("Never", "OnFailure"):
            return PodKind.PROCESS
        if vantages:
            return PodKind.VANTAGE
        return PodKind.DNS  # a Deployment of the project: not run (see the man page)
    if "coredns" in name or not image:
        return PodKind.DNS
    return PodKind.UNPULLABLE


def pull_failure(image: str) -> str:
    """The CRI's error text for an image the sandbox cannot have."""
    return (f'failed to pull and unpack image "{image}": failed to resolve reference '
            f'"{image}": the sandbox pulls no images')


def waiting_status(pod: Obj, reason: str) -> list[Obj]:
    statuses = []
    for container in (pod.get("spec") or {}).get("containers") or ():
        image = container.get("image", "")
        message = pull_failure(image) if reason == "ErrImagePull" else \
            f'Back-off pulling image "{image}"'
        statuses.append({"name": container.get("name", ""), "image": image, "imageID": "",
                         "ready": False, "started": False, "restartCount": 0,
                         "state": {"waiting": {"reason": reason, "message": message}},
                         "lastState": {}})
    return statuses


def log_refusal(pod: Obj, container: str) -> str | None:
    """The kubelet's 400 text when ``container`` has no log yet, or None."""
    name = pod["metadata"]["name"]
    for status in (pod.get("status") or {}).get("containerStatuses") or ():
        if status.get("name") != container:
            continue
        waiting = (status.get("state") or {}).get("waiting")
        if waiting is None:
            return None
        reason = waiting.get("reason", "")
        detail = {"ErrImagePull": "image can't be pulled",
                  "ImagePullBackOff": "trying and failing to pull image"}.get(reason, reason)
        return f'container "{container}" in pod "{name}" is waiting to start: {detail}'
    return f'container "{container}" in pod "{name}" is waiting to start: ContainerCreating'


def argv_of(container: Obj) -> list[str]:
    """The container's command and args; ``corednsprobe`` (the image's entrypoint)
    is this interpreter running the package."""
    command = list(container.get("command") or [PROJECT_IMAGE])
    args = list(container.get("args") or ([] if container.get("command") else ["run"]))
    if command and command[0] in (PROJECT_IMAGE, f"/usr/local/bin/{PROJECT_IMAGE}"):
        command = [sys.executable, "-m", "corednsprobe", *command[1:]]
    return [*command, *args]


@dataclass
class RunningProcess:
    """One container of the project's image, as a child process."""

    process: asyncio.subprocess.Process
    log_path: Path
    exited: asyncio.Event = field(default_factory=asyncio.Event)  # output all logged


class ProcessPods:
    """The processes of the project-image pods, and their logs."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.running: dict[str, RunningProcess] = {}  # pod uid → its process
        self.logs: dict[tuple[str, str], Path] = {}  # (namespace, pod) → log file

    async def start(self, pod: Obj, extra_env: dict[str, str],
                    prefix: Sequence[str] = ()) -> RunningProcess:
        """Start the pod's command (after ``prefix``, e.g. ``ip netns exec NS``)."""
        container = pod["spec"]["containers"][0]
        env = {k: v for k, v in os.environ.items() if k in _KEPT_ENV}
        env.update({e["name"]: str(e.get("value", "")) for e in container.get("env") or ()
                    if "name" in e})
        env.update(extra_env)
        self.directory.mkdir(parents=True, exist_ok=True)
        meta = pod["metadata"]
        log_path = self.directory / f"{meta['namespace']}_{meta['name']}_{meta['uid']}.log"
        log_path.touch()
        process = await asyncio.create_subprocess_exec(
            *prefix, *argv_of(container), stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, env=env,
            start_new_session=True)
        running = RunningProcess(process, log_path)
        self.running[meta["uid"]] = running
        self.logs[(meta["namespace"], meta["name"])] = log_path
        asyncio.get_running_loop().create_task(self._reap(running))
        return running

    @staticmethod
    async def _reap(running: RunningProcess) -> None:
        """Copy the process's output into its log, each line stamped with the
        time it arrived, until the pipe closes; then wait for the exit."""
        try:
            stdout = running.process.stdout
            if stdout is not None:
                with running.log_path.open("ab", buffering=0) as sink:
                    pending = b""
                    while chunk := await stdout.read(_READ_CHUNK):
                        arrived = time.time_ns()
                        pending += chunk
                        *lines, pending = pending.split(b"\n")
                        if lines:
                            sink.write(b"".join(cri_record(arrived, line + b"\n")
                                                for line in lines))
                    if pending:
                        sink.write(cri_record(time.time_ns(), pending))
            await running.process.wait()
        finally:
            running.exited.set()

    async def stop(self, uid: str, grace: float) -> int | None:
        """SIGTERM, then SIGKILL after ``grace`` seconds; the exit code."""
        running = self.running.pop(uid, None)
        if running is None:
            return None
        process = running.process
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            try:
                await asyncio.wait_for(running.exited.wait(), max(grace, 0.0))
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                await running.exited.wait()
        return process.returncode

    async def close(self) -> None:
        for uid in list(self.running):
            await self.stop(uid, 0.0)

    def forget(self, namespace: str, name: str) -> None:
        path = self.logs.pop((namespace, name), None)
        if path is not None:
            path.unlink(missing_ok=True)

    def _records(self, namespace: str, name: str) -> list[bytes]:
        path = self.logs.get((namespace, name))
        data = path.read_bytes() if path is not None and path.exists() else b""
        return data.splitlines(keepends=True)

    def read(self, namespace: str, name: str, options: LogOptions = LogOptions()) -> bytes:
        """The log so far: the last ``tail`` lines, then of those the ones since
        ``since`` (the kubelet's order)."""
        records = self._records(namespace, name)
        if options.tail is not None:
            records = records[-options.tail:] if options.tail > 0 else []
        return render(records, options)

    async def follow(self, namespace: str, name: str, uid: str,
                     options: LogOptions = LogOptions()) -> AsyncIterator[bytes]:
        """The log so far, then what the process writes until it has exited."""
        path = self.logs.get((namespace, name))
        data = path.read_bytes() if path is not None and path.exists() else b""
        offset = data.rfind(b"\n") + 1
        records = data[:offset].splitlines(keepends=True)
        if options.tail is not None:
            records = records[-options.tail:] if options.tail > 0 else []
        if first := render(records, options):
            yield first
        while path is not None:
            running = self.running.get(uid)
            done = running is None or running.exited.is_set()
            data = path.read_bytes()[offset:] if path.exists() else b""
            whole = data[:data.rfind(b"\n") + 1]
            if whole:
                offset += len(whole)
                if chunk := render(whole.splitlines(keepends=True), options):
                    yield chunk
            elif done:
                return
            else:
                await asyncio.sleep(0.05)
