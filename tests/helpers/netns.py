"""Network namespaces and nft rules for fault tests, always removed afterwards.

Owns: creating a namespace with this area's name prefix, nft tables inside it,
and deleting both (and any process left in the namespace) at the end.
Never does: touch the host's own namespace, routes or firewall.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Iterator

from tests.helpers.dnsservers import unique_name


def run(*cmd: str, stdin: str | None = None) -> str:
    done = subprocess.run(cmd, input=stdin, capture_output=True, text=True, timeout=30)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed: {done.stderr.strip()}")
    return done.stdout


@contextlib.contextmanager
def namespace() -> Iterator[str]:
    name = unique_name("n")
    run("ip", "netns", "add", name)
    try:
        run("ip", "-n", name, "link", "set", "lo", "up")
        yield name
    finally:
        _kill_inside(name)
        subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=30)


def _kill_inside(name: str) -> None:
    pids = subprocess.run(["ip", "netns", "pids", name], capture_output=True, text=True,
                          timeout=30).stdout.split()
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(pid), signal.SIGKILL)


UDP_53 = "udp dport 53"
ANY_53 = "meta l4proto { tcp, udp } th dport 53"


def port_filter(ns: str, verdict: str, match: str = UDP_53) -> str:
    """Add an nft table in ``ns`` whose input chain applies ``verdict`` to ``match``.

    Returns the table name; :func:`counted_packets` reads its counter.
    """
    table = unique_name("t")
    run("ip", "netns", "exec", ns, "nft", "-f", "-", stdin=f"""
table inet {table} {{
  chain input {{
    type filter hook input priority 0; policy accept;
    {match} counter {verdict}
  }}
}}
""")
    return table


def counted_packets(ns: str, table: str) -> int:
    out = run("ip", "netns", "exec", ns, "nft", "list", "table", "inet", table)
    for word_before, word in zip(out.split(), out.split()[1:], strict=False):
        if word_before == "packets":
            return int(word)
    raise RuntimeError(f"no counter in {table}")
