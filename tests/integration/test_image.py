"""The container image: built from deploy/Containerfile on an offline Debian base, and
run as the Deployment runs it (user 65532, read-only root, no capabilities): it
prints its version, answers `check` against a real DNS server, and `run` probes
the sandbox's CoreDNS pods and serves /status. It holds the pinned dependencies
and neither the sandbox nor any test tool.

podman keeps everything in a private folder (its own storage.conf and
containers.conf, see /work/shared/reference/image-build.md): host networking
only, so the host's network is never changed; all of it is removed afterwards.
The rootfs tar from mmdebstrap is kept a week in ~/.cache/corednsprobe. The build
times and image size are printed (`pytest -s` shows them).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import dnsservers

ROOT = Path(__file__).resolve().parents[2]
SOURCES = Path("/etc/apt/sources.list.d/debian.sources")
HOST_CA = Path("/etc/ssl/certs/ca-certificates.crt")
ROOTFS_MAX_AGE = 7 * 24 * 3600
BASE = "localhost/corednsprobe-test-base:bookworm"
IMAGE = "localhost/corednsprobe:test"
AS_DEPLOYED = ["--network=host", "--user", "65532:65532", "--read-only",
               "--read-only-tmpfs=false", "--cap-drop=ALL", "--security-opt=no-new-privileges"]
# The sandbox, the importable names of what `.[dev]` adds, and the build tools.
UNWANTED = ("corednsprobe.sandbox", "pytest", "pytest_asyncio", "xdist", "hypothesis", "looptime",
              "kubernetes_validate", "ruff", "mypy", "importlinter", "pip", "setuptools")

pytestmark = [pytest.mark.slow]


def _absent() -> str:
    missing = [p for p in ("podman", "mmdebstrap", "runc") if shutil.which(p) is None]
    if missing:
        return (f"not installed: {', '.join(missing)} (apt-get install mmdebstrap podman "
                "runc, as .ci/run does)")
    if os.geteuid() != 0:
        return "needs root: mmdebstrap and podman run here in root mode"
    return ""


class Podman:
    """podman with its own storage and settings in ``home``; ``close`` removes it all."""

    def __init__(self, home: Path) -> None:
        self.home = home
        (home / "storage.conf").write_text(
            '[storage]\ndriver = "overlay"\n'
            f'graphroot = "{home}/graph"\nrunroot = "{home}/run"\n')
        # This host mixes cgroup v1 and v2 and has no CAP_SYS_RESOURCE; podman's
        # default bridge network would change the host's iptables and ip_forward.
        (home / "containers.conf").write_text(
            '[containers]\ndefault_ulimits = ["nofile=1024:1024", "nproc=4096:4096"]\n'
            'netns = "host"\n'
            f'[engine]\nruntime = "runc"\ncgroup_manager = "cgroupfs"\n'
            f'events_logger = "file"\nevents_logfile_path = "{home}/events.log"\n'
            f'tmp_dir = "{home}/tmp"\n')
        self.env = {**os.environ, "CONTAINERS_STORAGE_CONF": str(home / "storage.conf"),
                    "CONTAINERS_CONF": str(home / "containers.conf"), "TMPDIR": str(home)}

    def __call__(self, *args: str, timeout: float = 120, check: bool = True,
                 ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(["podman", *args], env=self.env, capture_output=True, text=True,
                              timeout=timeout)
        if check:
            assert proc.returncode == 0, f"podman {' '.join(args)}:\n{proc.stdout}{proc.stderr}"
        return proc

    def run(self, *args: str, entrypoint: str | None = None, timeout: float = 60,
            ) -> subprocess.CompletedProcess[str]:
        extra = ["--entrypoint", entrypoint] if entrypoint else []
        return self("run", "--rm", *AS_DEPLOYED, *extra, IMAGE, *args, timeout=timeout,
                    check=False)

    def close(self) -> None:
        self("rm", "--all", "--force", "--time", "0", check=False)
        self("system", "reset", "--force", timeout=300, check=False)
        with open("/proc/self/mounts") as f:
            left = [line for line in f if str(self.home) in line]
        for line in left:  # an overlay podman did not unmount; never leave one behind
            subprocess.run(["umount", "-l", line.split()[1]], check=False, timeout=30)
        shutil.rmtree(self.home, ignore_errors=True)
        assert left == [], f"podman left mounts behind: {left}"


@pytest.fixture(scope="module")
def podman(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Podman]:
    if reason := _absent():
        pytest.skip(reason)
    p = Podman(tmp_path_factory.mktemp("podman"))
    try:
        yield p
    finally:
        p.close()


def _rootfs() -> tuple[Path, bool]:
    """A bookworm rootfs tar from mmdebstrap, reused for a week from the user's cache
    (it is Debian's packages, not podman state); whether it was reused."""
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "corednsprobe"
    rootfs = cache / "test-rootfs-bookworm.tar"
    if rootfs.exists() and time.time() - rootfs.stat().st_mtime < ROOTFS_MAX_AGE:
        return rootfs, True
    cache.mkdir(parents=True, exist_ok=True)
    partial = cache / f"test-rootfs-bookworm.{os.getpid()}.partial.tar"
    sources = [str(SOURCES)] if SOURCES.exists() else []
    try:
        proc = subprocess.run(["mmdebstrap", "--quiet", "--variant=apt",
                               "--include=python3,python3-venv,ca-certificates", "bookworm",
                               str(partial), *sources], capture_output=True, text=True,
                              timeout=900)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        partial.replace(rootfs)
    finally:
        partial.unlink(missing_ok=True)
    return rootfs, False


def _build(podman: Podman) -> dict[str, float]:
    """The base (mmdebstrap + import) and the image; seconds each took."""
    times: dict[str, float] = {}
    start = time.monotonic()
    rootfs, reused = _rootfs()
    times["rootfs reused" if reused else "rootfs"] = time.monotonic() - start
    podman("import", str(rootfs), BASE, timeout=300)
    times["base"] = time.monotonic() - start
    start = time.monotonic()
    podman("build", "--network=host", "--pull=never", "-f", str(ROOT / "deploy/Containerfile"),
           "--secret", f"id=hostca,src={HOST_CA}", "--build-arg", f"BASE={BASE}",
           "-t", IMAGE, str(ROOT), timeout=900)
    times["image"] = time.monotonic() - start
    return times


@contextlib.contextmanager
def _sandbox(work: Path) -> Iterator[tuple[Path, dict[str, str]]]:
    """`corednsprobe sandbox` on 127.0.0.1 with two pods. Yields what a pod of the
    Deployment gets: a service-account folder (token, ca.crt, namespace) that
    anyone may read, and the KUBERNETES_SERVICE_* variables."""
    import base64

    import yaml

    kubeconfig = work / "sandbox.kubeconfig"
    proc = subprocess.Popen(
        [sys.executable, "-m", "corednsprobe", "sandbox", "--pods", "2", "--grace", "1",
         "--kubeconfig-out", str(kubeconfig)],
        env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith("Ctrl-C stops the sandbox"):
                break
        else:
            raise AssertionError(f"the sandbox did not start (exit {proc.wait()})")
        kc = yaml.safe_load(kubeconfig.read_text())
        cluster, user = kc["clusters"][0]["cluster"], kc["users"][0]["user"]
        account = work / "serviceaccount"
        account.mkdir()
        (account / "token").write_text(user["token"])
        (account / "ca.crt").write_bytes(base64.b64decode(cluster["certificate-authority-data"]))
        (account / "namespace").write_text("kube-system")
        for f in (account, *account.iterdir()):  # the container runs as 65532
            f.chmod(0o755 if f.is_dir() else 0o644)
        host, _, port = cluster["server"].removeprefix("https://").rpartition(":")
        yield account, {"KUBERNETES_SERVICE_HOST": host, "KUBERNETES_SERVICE_PORT": port}
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _status(port: int) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/status", timeout=2) as resp:
        doc: dict[str, Any] = json.load(resp)
        return doc


def _python(podman: Podman, code: str) -> Any:
    proc = podman.run("-c", code, entrypoint="python3")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads(proc.stdout)


def _pins() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "deploy" / "constraints.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, version = line.partition("==")
            pins[name.lower().replace("_", "-")] = version
    return pins


def test_image_builds_and_runs_as_deployed(podman: Podman, tmp_path: Path) -> None:
    times = _build(podman)
    size = int(podman("image", "inspect", "--format", "{{.Size}}", IMAGE).stdout)
    base = int(podman("image", "inspect", "--format", "{{.Size}}", BASE).stdout)
    took = ", ".join(f"{k} {v:.0f} s" for k, v in times.items())
    print(f"\nimage build: {took}; size {size / 1e6:.0f} MB (base {base / 1e6:.0f} MB)")
    config = json.loads(podman("image", "inspect", IMAGE).stdout)[0]["Config"]
    assert config["User"] == "65532:65532"
    assert config["Entrypoint"] == ["corednsprobe"] and config["Cmd"] == ["run"]

    # version, as user 65532 with a read-only root and no capabilities
    done = podman.run("version")
    assert (done.returncode, done.stdout) == (0, "corednsprobe 0.1.0\n"), done.stderr

    # check against a real DNS server (unbound) on the host's loopback
    with dnsservers.unbound(tmp_path / "dns") as server:
        done = podman.run("check", "--server", f"{server.address}:{server.port}",
                          "--expect", dnsservers.SERVICE_IP, "--count", "2", "--json")
        assert done.returncode == 0, done.stdout + done.stderr
        results = json.loads(done.stdout)["results"]
        assert [r["outcome"] for r in results] == ["ok", "ok"], done.stdout
    broken = podman.run("check", "--server", f"127.0.0.1:{dnsservers.free_port()}",
                        "--timeout", "0.2")
    assert broken.returncode == 1, broken.stdout + broken.stderr  # exit codes come through

    # run: the service inside the container, with in-cluster credentials as in a pod,
    # probes the sandbox's pods on loopback
    with _sandbox(tmp_path) as (account, service_env):
        port = dnsservers.free_port()
        name = "corednsprobe-test-run"
        env = {**service_env, "COREDNSPROBE_LISTEN": f"127.0.0.1:{port}",
               "COREDNSPROBE_INTERVAL": "0.5", "COREDNSPROBE_MIN_POD_AGE": "0",
               "COREDNSPROBE_LOG_FORMAT": "json"}
        podman("run", "-d", "--name", name, *AS_DEPLOYED,
               "-v", f"{account}:/var/run/secrets/kubernetes.io/serviceaccount:ro",
               *(arg for k, v in env.items() for arg in ("-e", f"{k}={v}")), IMAGE)
        try:
            healths: list[tuple[str, str]] = []
            for _ in range(120):
                with contextlib.suppress(OSError, ValueError):
                    doc = _status(port)
                    healths = [(t["kind"], t["health"]) for t in doc["targets"]]
                    if len(healths) == 3 and {h for _, h in healths} == {"healthy"}:
                        break
                time.sleep(0.5)
            logs = podman("logs", name, check=False)
            assert sorted(healths) == [("pod", "healthy"), ("pod", "healthy"),
                                       ("service", "healthy")], logs.stdout + logs.stderr
            stopped = podman("stop", "--time", "20", name, timeout=60)
            code = podman("inspect", "--format", "{{.State.ExitCode}}", name).stdout.strip()
            assert code == "0", stopped.stderr + podman("logs", name, check=False).stderr
        finally:
            podman("rm", "--force", "--time", "0", name, check=False)

    # what the image holds: the pins, and neither the sandbox nor any test tool
    found = _python(podman, "import importlib.util as u, json; print(json.dumps("
                    f"[m for m in {UNWANTED!r} if u.find_spec(m)]))")
    assert found == []
    dists = _python(podman, "import importlib.metadata as m, json; print(json.dumps("
                    "{d.metadata['Name'].lower().replace('_', '-'): d.version "
                    "for d in m.distributions()}))")
    assert dists.pop("corednsprobe") == "0.1.0"
    assert dists == _pins()
    demo = podman.run("demo", "--duration", "1")
    assert demo.returncode == 2 and "leaves out the sandbox" in demo.stderr, demo.stderr
