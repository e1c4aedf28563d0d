"""Choosing a DNS backend by name: ``inprocess``, ``netns`` or ``none``.

Owns: the name → class table, imported lazily so that a backend module that
is missing (or needs what this machine lacks) fails only when chosen, with a
message that says so. Never does: start anything.
"""

from __future__ import annotations

import importlib

from corednsprobe.sandbox.backend import DnsBackend

BACKENDS: dict[str, tuple[str, str, str]] = {
    "inprocess": ("corednsprobe.sandbox.inprocess", "InProcessBackend",
                  "a responder per pod on its own 127.x address; no root needed"),
    "netns": ("corednsprobe.sandbox.netns", "NetnsBackend",
              "a real DNS server per pod in its own network namespace; needs root"),
    "none": ("corednsprobe.sandbox.nullbackend", "NullBackend", "API only, no DNS"),
}


class BackendUnavailable(Exception):
    """The chosen backend cannot be loaded."""


def make_backend(name: str, domain: str = "cluster.local") -> DnsBackend:
    if name not in BACKENDS:
        raise BackendUnavailable(f"unknown DNS backend {name!r}: expected one of "
                                 f"{', '.join(BACKENDS)}")
    module_name, class_name, _ = BACKENDS[name]
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise BackendUnavailable(
            f"DNS backend {name!r} is not available ({module_name} cannot be imported: {exc}); "
            "use --dns none for the API only") from exc
    backend: DnsBackend = getattr(module, class_name)(domain=domain)
    return backend
