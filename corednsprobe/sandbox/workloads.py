"""Pods that are not CoreDNS: the project's own image run for real, and images
the sandbox cannot pull.

Owns: telling a pod's kind from its first container's image (a CoreDNS image
is a DNS server through the backend; the project's own image, ``corednsprobe``
under any registry or tag, runs its ``command``/``args`` as a local process
when its restartPolicy is Never or OnFailure; any other image never starts),
the container statuses a real kubelet reports for each (``ErrImagePull`` then
``ImagePullBackOff`` while Pending; ``running``, then ``terminated`` with the
exit code; ``DeadlineExceeded`` past ``activeDeadlineSeconds``), the process's
output kept as the container log, and the texts of the kubelet's log errors
(pkg/kubelet/kubelet_pods.go validateContainerLogStatus). Never does: touch
the store (the controllers write what this module computes); run any image
but the project's; run a process anywhere but as a child of this one.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

Obj = dict[str, Any]

PROJECT_IMAGE = "corednsprobe"
DEADLINE_MESSAGE = "Pod was active on the node longer than the specified deadline"
_KEPT_ENV = ("PATH", "PYTHONPATH", "HOME", "LANG", "LC_ALL", "TZ")


class PodKind(StrEnum):
    DNS = "dns"  # a CoreDNS image: the backend serves DNS at the pod IP
    PROCESS = "process"  # the project's image: a real local process
    UNPULLABLE = "unpullable"  # anything else: Pending, ImagePullBackOff


def image_name(image: str) -> str:
    """``registry/path/name:tag@digest`` → ``name``."""
    without_digest = image.split("@", 1)[0]
    last = without_digest.rsplit("/", 1)[-1]
    return last.split(":", 1)[0]


def pod_kind(pod: Obj) -> PodKind:
    containers = (pod.get("spec") or {}).get("containers") or [{}]
    image = str(containers[0].get("image") or "")
    name = image_name(image)
    if name == PROJECT_IMAGE:
        if (pod.get("spec") or {}).get("restartPolicy") in ("Never", "OnFailure"):
            return PodKind.PROCESS
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
    exited: asyncio.Event = field(default_factory=asyncio.Event)


class ProcessPods:
    """The processes of the project-image pods, and their logs."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.running: dict[str, RunningProcess] = {}  # pod uid → its process
        self.logs: dict[tuple[str, str], Path] = {}  # (namespace, pod) → log file

    async def start(self, pod: Obj, extra_env: dict[str, str]) -> RunningProcess:
        container = pod["spec"]["containers"][0]
        env = {k: v for k, v in os.environ.items() if k in _KEPT_ENV}
        env.update({e["name"]: str(e.get("value", "")) for e in container.get("env") or ()
                    if "name" in e})
        env.update(extra_env)
        self.directory.mkdir(parents=True, exist_ok=True)
        meta = pod["metadata"]
        log_path = self.directory / f"{meta['namespace']}_{meta['name']}_{meta['uid']}.log"
        with log_path.open("ab") as sink:
            process = await asyncio.create_subprocess_exec(
                *argv_of(container), stdin=asyncio.subprocess.DEVNULL, stdout=sink,
                stderr=sink, env=env, start_new_session=True)
        running = RunningProcess(process, log_path)
        self.running[meta["uid"]] = running
        self.logs[(meta["namespace"], meta["name"])] = log_path
        asyncio.get_running_loop().create_task(self._reap(running))
        return running

    @staticmethod
    async def _reap(running: RunningProcess) -> None:
        await running.process.wait()
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

    def read(self, namespace: str, name: str, tail: int | None = None) -> bytes:
        path = self.logs.get((namespace, name))
        data = path.read_bytes() if path is not None and path.exists() else b""
        if tail is not None:
            lines = data.splitlines(keepends=True)
            data = b"".join(lines[-tail:]) if tail > 0 else b""
        return data

    async def follow(self, namespace: str, name: str, uid: str,
                     tail: int | None = None) -> AsyncIterator[bytes]:
        """The log so far, then what the process writes until it has exited."""
        first = self.read(namespace, name, tail)
        offset = len(self.read(namespace, name))
        if first:
            yield first
        path = self.logs.get((namespace, name))
        while path is not None:
            running = self.running.get(uid)
            data = path.read_bytes()[offset:] if path.exists() else b""
            if data:
                offset += len(data)
                yield data
            elif running is None or running.exited.is_set():
                return
            else:
                await asyncio.sleep(0.05)
