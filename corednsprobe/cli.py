"""The `corednsprobe` command: argument parsing and exit codes, nothing else.

Exit codes: 0 success; 1 a probe or check failed; 2 bad usage or settings;
3 the cluster cannot be reached or authenticated to.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence

from corednsprobe import __version__
from corednsprobe.config import Settings, SettingsError, effective, markdown_table
from corednsprobe.sandbox import command as sandbox_command

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_CLUSTER = 3

Handler = Callable[[argparse.Namespace, Settings], int]


def _cmd_version(args: argparse.Namespace, settings: Settings) -> int:
    print(f"corednsprobe {__version__}")
    return EXIT_OK


def _cmd_config(args: argparse.Namespace, settings: Settings) -> int:
    if args.markdown:
        sys.stdout.write(markdown_table())
    elif args.json:
        print(json.dumps(dict(effective(settings)), indent=2))
    else:
        rows = effective(settings)
        width = max(len(name) for name, _ in rows)
        for name, value in rows:
            print(f"{name:<{width}}  {value}")
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="corednsprobe",
        description="Probe CoreDNS over UDP, pod by pod and through its Service.",
        epilog="Settings come from COREDNSPROBE_* variables; `corednsprobe config` lists them.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("version", help="print the version")
    p.set_defaults(handler=_cmd_version)

    p = sub.add_parser("config", help="print the settings in force (or the reference table)")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--markdown", action="store_true", help="print the reference table")
    group.add_argument("--json", action="store_true", help="print the settings as JSON")
    p.set_defaults(handler=_cmd_config)

    sandbox_command.register(sub)

    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        print(f"corednsprobe: invalid settings:\n{exc}", file=sys.stderr)
        return EXIT_USAGE
    handler: Handler = args.handler
    try:
        return handler(args, settings)
    except KeyboardInterrupt:
        return 130
