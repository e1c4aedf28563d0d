"""``corednsprobe sandbox``: run a stand-in cluster until SIGINT/SIGTERM.

Owns: the subcommand's arguments, choosing the DNS backend by name, writing
the kubeconfig, printing where everything is, and cleaning up on a signal.
Never does: anything the ``Sandbox`` class does not offer to tests as well.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
import tempfile
from pathlib import Path
from typing import Any

from corednsprobe.addr import split_host_port

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def register(sub: Any) -> None:
    """Add the ``sandbox`` parser to the CLI's subparsers."""
    p = sub.add_parser("sandbox", help="run a local stand-in Kubernetes cluster with CoreDNS pods",
                       description="A local Kubernetes API server with a coredns Deployment, "
                       "the kube-dns Service and controllers, for the demo and the tests.")
    p.add_argument("--pods", type=int, default=2, metavar="N", help="CoreDNS replicas (2)")
    p.add_argument("--nodes", type=int, default=None, metavar="N",
                   help="nodes the pods spread over (1 for --dns inprocess, 3 otherwise)")
    p.add_argument("--listen", default="127.0.0.1:0", metavar="HOST:PORT",
                   help="API address; port 0 picks a free one (127.0.0.1:0)")
    p.add_argument("--dns", default="inprocess", choices=("inprocess", "netns", "none"),
                   help="DNS backend: inprocess (no root), netns (root, real servers), "
                   "none (API only, no DNS)")
    p.add_argument("--domain", default="cluster.local", help="cluster domain (cluster.local)")
    p.add_argument("--kubeconfig-out", metavar="PATH",
                   help="where to write the kubeconfig (default: a temporary file)")
    p.add_argument("--pdb-min-available", metavar="N|PCT",
                   help="also create a PodDisruptionBudget with this minAvailable")
    p.add_argument("--grace", type=int, default=30, metavar="SECONDS",
                   help="the pods' terminationGracePeriodSeconds (30)")
    p.add_argument("--nsid", action="store_true",
                   help="DNS pods answer EDNS NSID with their pod name (off by default, as "
                   "CoreDNS without its nsid plugin)")
    p.add_argument("--run-probers", action="store_true",
                   help="with --dns netns, run the project's Deployment pods (deploy/) as "
                   "probers in their node's namespace (off: they are recorded, not run)")
    p.add_argument("--no-tls", action="store_true",
                   help="serve plain HTTP (kubectl then sends no token: use a client that does)")
    p.set_defaults(handler=_handler)


def _handler(args: argparse.Namespace, settings: object) -> int:
    return run(args)


def _listen(text: str) -> tuple[str, int]:
    try:
        return split_host_port(text)
    except ValueError:
        raise ValueError(f"--listen {text!r}: expected HOST:PORT, e.g. 127.0.0.1:0") from None


def _min_available(text: str | None) -> int | str | None:
    if text is None:
        return None
    if text.endswith("%") or not text.isdigit():
        return text
    return int(text)


def run(args: argparse.Namespace) -> int:
    from corednsprobe.sandbox.backends import BackendUnavailable, make_backend

    try:
        host, port = _listen(args.listen)
        if args.pods < 0:
            raise ValueError("--pods must be 0 or more")
        if args.nodes is not None and not 1 <= args.nodes <= 26:
            raise ValueError(f"--nodes {args.nodes}: expected 1 to 26")
        backend = make_backend(args.dns, args.domain)
    except (ValueError, BackendUnavailable) as exc:
        print(f"corednsprobe sandbox: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        import uvloop

        loop_factory: Any = uvloop.new_event_loop
    except ImportError:
        loop_factory = None
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        return runner.run(_serve(args, host, port, backend))


async def _serve(args: argparse.Namespace, host: str, port: int, backend: Any) -> int:
    from corednsprobe.sandbox.cluster import Sandbox, SandboxConfig

    config = SandboxConfig(replicas=args.pods, nodes=args.nodes, domain=args.domain,
                           host=host, port=port,
                           termination_grace_seconds=args.grace,
                           pdb_min_available=_min_available(args.pdb_min_available),
                           tls=not args.no_tls, nsid=args.nsid,
                           run_probers=args.run_probers)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    kubeconfig, temporary = _kubeconfig_path(args.kubeconfig_out)
    try:
        async with Sandbox(backend, config) as sandbox:
            sandbox.write_kubeconfig(kubeconfig)
            with contextlib.suppress(TimeoutError):
                await sandbox.wait_ready(within=30)
            _announce(sandbox, kubeconfig)
            await stop.wait()
            print("stopping", flush=True)
    except Exception as exc:
        print(f"corednsprobe sandbox: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_FAILED
    finally:
        if temporary:
            with contextlib.suppress(FileNotFoundError):
                kubeconfig.unlink()
    return EXIT_OK


def _kubeconfig_path(requested: str | None) -> tuple[Path, bool]:
    if requested:
        return Path(requested), False
    handle, name = tempfile.mkstemp(prefix="cdpa-sandbox-", suffix=".kubeconfig")
    os.close(handle)
    return Path(name), True


def _announce(sandbox: Any, kubeconfig: Path) -> None:
    state = sandbox.state()
    port = state["port"]
    lines = [
        f"sandbox API: {sandbox.url}",
        f"kubeconfig: {kubeconfig}  (export KUBECONFIG={kubeconfig})",
        f"fault control: {sandbox.url}/sandbox/v1/state"
        + ("  (self-signed: curl -k)" if sandbox.config.tls else ""),
        f"DNS backend: {state['backend']}: {sandbox.backend.client_hint()}",
        f"kube-dns ClusterIP: {state['clusterIP']}:{port}",
    ]
    for node, address in state["nodes"].items():
        lines.append(f"node {node}: {address}")
    for pod in state["pods"]:
        lines.append(f"pod {pod['name']} slot {pod['slot']} on {pod['node']}: {pod['ip']}:{port}"
                     f"{'' if pod['ready'] else ' (not ready)'}")
    lines.append("Ctrl-C stops the sandbox and removes everything it created.")
    print("\n".join(lines), flush=True)
