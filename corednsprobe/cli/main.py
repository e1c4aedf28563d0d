"""The `corednsprobe` command: argument parsing and exit codes, nothing else.

Exit codes: 0 success; 1 a probe or check failed, or (targets) the DNS Service
does not exist; 2 bad usage or settings;
3 the cluster cannot be reached or authenticated to.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import os
import sys
from collections.abc import Callable, Sequence

from corednsprobe import __version__, logs
from corednsprobe.cli import check
from corednsprobe.cli.render import table
from corednsprobe.config import (
    Settings,
    SettingsError,
    effective,
    markdown_table,
    parse_k8s_name,
    troff_settings,
)

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_CLUSTER = 3
# The container image leaves the sandbox out; `demo` and `sandbox` then say so.
NO_SANDBOX = ("this installation leaves out the sandbox (corednsprobe/sandbox), as the "
              "container image does; install the Python package (README) to run it")
# Other commands log only warnings unless COREDNSPROBE_LOG_LEVEL says otherwise
# (the demo's table already shows what its info lines would say).
LONG_RUNNING = frozenset({"run", "sandbox"})
ENV_LOG_LEVEL = "COREDNSPROBE_LOG_LEVEL"
ENV_LOG_FORMAT = "COREDNSPROBE_LOG_FORMAT"

Handler = Callable[[argparse.Namespace, Settings], int]


def _cmd_version(args: argparse.Namespace, settings: Settings) -> int:
    print(f"corednsprobe {__version__}")
    return EXIT_OK


def _cmd_config(args: argparse.Namespace, settings: Settings) -> int:
    if args.markdown:
        sys.stdout.write(markdown_table())
    elif args.man:
        sys.stdout.write(troff_settings())
    elif args.json:
        print(json.dumps({name: {"value": value, "source": source}
                          for name, value, source in effective(settings, os.environ)},
                         indent=2))
    else:
        rows = [("VARIABLE", "VALUE", "SOURCE")]
        rows += [(name, value or "(empty)", source)
                 for name, value, source in effective(settings, os.environ)]
        print("\n".join(table(rows)))
    return EXIT_OK


def _cmd_targets(args: argparse.Namespace, settings: Settings) -> int:
    import uvloop

    from corednsprobe.cli.reach import with_reach
    from corednsprobe.cli.targets import ClusterArgs, run_targets
    from corednsprobe.kube.access import ClusterAccessError
    from corednsprobe.reach.base import NoReach

    cluster = ClusterArgs(args.kubeconfig, args.context)
    try:
        return uvloop.run(run_targets(cluster, with_reach(settings, args), watch=args.watch,
                                      as_json=args.json, planned=args.reach is not None))
    except (ClusterAccessError, NoReach) as exc:
        print(f"corednsprobe: {exc}", file=sys.stderr)
        return EXIT_CLUSTER


def _cmd_run(args: argparse.Namespace, settings: Settings) -> int:
    import uvloop

    from corednsprobe.cli.reach import with_reach

    settings = with_reach(settings, args)
    from corednsprobe.cli.targets import ClusterArgs, open_cluster_patiently
    from corednsprobe.service.app import serve

    async def main() -> None:
        access = await open_cluster_patiently(ClusterArgs(args.kubeconfig, args.context),
                                              settings)
        try:
            await serve(settings, access.api, in_cluster=access.in_cluster)
        finally:
            await access.close()

    return _serve_and_explain(lambda: uvloop.run(main()))


def _cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    import uvloop

    if not _sandbox_installed():
        print(f"corednsprobe demo: {NO_SANDBOX}", file=sys.stderr)
        return EXIT_USAGE
    from corednsprobe.cli.demo import ScriptedFault, demo_settings, run_demo, validate

    try:
        faults = [ScriptedFault.parse(f) for f in args.fault]
    except ValueError as exc:
        print(f"corednsprobe demo: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if refused := validate(args.pods, faults, args.duration):
        print(f"corednsprobe demo: {refused}", file=sys.stderr)
        return EXIT_USAGE
    return _serve_and_explain(
        lambda: uvloop.run(run_demo(demo_settings(settings), args.pods, faults, args.duration)))


def _serve_and_explain(body: Callable[[], object]) -> int:
    """Run a long-running command; turn the failures people can fix into one line
    and an exit code (they may arrive wrapped in a TaskGroup's ExceptionGroup)."""
    from corednsprobe.kube.access import ClusterAccessError
    from corednsprobe.reach.base import NoReach
    from corednsprobe.service.server import ListenError

    try:
        body()
    except (ClusterAccessError, ListenError, NoReach, BaseExceptionGroup) as exc:
        leaf = _single_leaf(exc)
        if not isinstance(leaf, ClusterAccessError | ListenError | NoReach):
            raise
        print(f"corednsprobe: {leaf}", file=sys.stderr)
        return EXIT_USAGE if isinstance(leaf, ListenError) else EXIT_CLUSTER
    return EXIT_OK


def _single_leaf(exc: BaseException) -> BaseException:
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


def _namespace(text: str) -> str:
    try:
        return parse_k8s_name(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a namespace name (lower-case letters, digits and '-')") from None


REACH_CHOICES = ("auto", "direct", "exposed", "probe-pod", "port-forward")


def _add_reach_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--reach", choices=REACH_CHOICES,
                   help="how probes reach the pods (default COREDNSPROBE_REACH, else auto); "
                   "see corednsprobe-deploy(7)")


def _add_cluster_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--kubeconfig", help="kubeconfig file (default: in-cluster, $KUBECONFIG "
                   "(files merged as kubectl does), ~/.kube/config)")
    p.add_argument("--context", help="kubeconfig context (default: its current context)")
    p.add_argument("-n", "--namespace", type=_namespace,
                   help="namespace of the CoreDNS Service and pods (default "
                   "COREDNSPROBE_NAMESPACE, else kube-system)")


def _cmd_check(args: argparse.Namespace, settings: Settings) -> int:
    if args.cluster:
        import uvloop

        from corednsprobe.cli.reach import run_cluster_check, with_reach

        return _cluster_command(lambda: uvloop.run(
            run_cluster_check(args, with_reach(settings, args))))
    return EXIT_OK if check.run(args, settings) else EXIT_FAILED


def _cmd_reach(args: argparse.Namespace, settings: Settings) -> int:
    import uvloop

    from corednsprobe.cli.reach import run_reach
    from corednsprobe.cli.targets import ClusterArgs

    def body() -> int:
        usable = uvloop.run(run_reach(ClusterArgs(args.kubeconfig, args.context), settings,
                                      as_json=args.json))
        return EXIT_OK if usable else EXIT_CLUSTER

    return _cluster_command(body)


def _cluster_command(body: Callable[[], int]) -> int:
    """A one-shot command against the cluster: exit 3 with one paragraph when the
    cluster cannot be reached, or no reach strategy can work (what each needs)."""
    from corednsprobe.kube.access import ClusterAccessError
    from corednsprobe.reach.base import NoReach, ReachLost

    try:
        return body()
    except (ClusterAccessError, NoReach, ReachLost, BaseExceptionGroup) as exc:
        leaf = _single_leaf(exc)
        if not isinstance(leaf, ClusterAccessError | NoReach | ReachLost):
            raise
        print(f"corednsprobe: {leaf}", file=sys.stderr)
        return EXIT_CLUSTER


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="corednsprobe",
        description="Probe CoreDNS over UDP, pod by pod and through its Service.",
        epilog="Settings come from COREDNSPROBE_* variables; `corednsprobe config` lists them.",
    )
    parser.add_argument("--version", action="version", version=f"corednsprobe {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("version", help="print the version")
    p.set_defaults(handler=_cmd_version)

    p = sub.add_parser("check", help="ask DNS servers once and report each probe")
    check.add_arguments(p)
    _add_cluster_options(p)
    _add_reach_option(p)
    p.set_defaults(handler=_cmd_check, usage_check=functools.partial(check.check_usage, p))

    p = sub.add_parser("config", help="print the settings in force (or the reference table)")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--markdown", action="store_true", help="print the reference table")
    group.add_argument("--json", action="store_true", help="print the settings as JSON")
    group.add_argument("--man", action="store_true", help="print the man page's settings section")
    p.set_defaults(handler=_cmd_config)

    p = sub.add_parser("run", help="the service: probe on a schedule, export /metrics and /status")
    _add_cluster_options(p)
    _add_reach_option(p)
    p.set_defaults(handler=_cmd_run)

    p = sub.add_parser("demo", help="the service against a local sandbox cluster (no cluster "
                       "or root needed)")
    p.add_argument("--pods", type=int, default=3, help="CoreDNS replicas (default 3)")
    p.add_argument("--fault", action="append", default=[], metavar="POD=FAULT@SECONDS",
                   help="inject FAULT (udp-drop, udp-reject, delay:MS, loss:PCT, servfail, "
                   "wrong-answer, none; +health-down hangs its /health too) into POD (a slot "
                   "number or pod name) SECONDS after start; repeatable")
    p.add_argument("--duration", type=float, default=None,
                   help="stop after this many seconds (default: run until ^C)")
    p.set_defaults(handler=_cmd_demo)

    p = sub.add_parser("targets", help="print what would be probed (the CoreDNS pods and Service)")
    p.add_argument("--watch", action="store_true",
                   help="print the targets, then each change as it happens, every line "
                   "stamped with the time, until ^C")
    p.add_argument("--json", action="store_true", help="JSON (one object per line with --watch)")
    _add_cluster_options(p)
    _add_reach_option(p)
    p.set_defaults(handler=_cmd_targets)

    p = sub.add_parser("reach", help="which reach strategies work from here with these "
                       "credentials, which auto would pick, and why the others are out")
    p.add_argument("--json", action="store_true", help="print one JSON document")
    _add_cluster_options(p)
    p.set_defaults(handler=_cmd_reach)

    if _sandbox_installed():
        from corednsprobe.sandbox import command as sandbox_command

        sandbox_command.register(sub)
    else:
        p = sub.add_parser("sandbox", help="(not installed here) a local stand-in cluster")
        p.set_defaults(handler=_cmd_no_sandbox)

    return parser


def _sandbox_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("corednsprobe.sandbox") is not None


def _cmd_no_sandbox(args: argparse.Namespace, settings: Settings) -> int:
    print(f"corednsprobe sandbox: {NO_SANDBOX}", file=sys.stderr)
    return EXIT_USAGE


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if (usage_check := getattr(args, "usage_check", None)) is not None:
        usage_check(args)
    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        print(f"corednsprobe: invalid settings:\n{exc}", file=sys.stderr)
        return EXIT_USAGE
    if getattr(args, "namespace", None):
        settings = dataclasses.replace(settings, namespace=args.namespace)
    quiet = args.command not in LONG_RUNNING and ENV_LOG_LEVEL not in os.environ
    fmt = settings.log_format
    if args.command == "demo" and ENV_LOG_FORMAT not in os.environ:
        fmt = "console"  # beside the demo's tables, never JSON unless asked for
    logs.configure("warning" if quiet else settings.log_level, fmt)
    handler: Handler = args.handler
    try:
        return handler(args, settings)
    except KeyboardInterrupt:
        return 130
