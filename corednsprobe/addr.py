"""Address text: one spelling of an IP address, and the one reader of ``HOST:PORT``.

Owns: turning address text (``::0001``, ``[::1]``) into one spelling, so that
two spellings of one address compare equal, and splitting ``HOST:PORT`` text
(COREDNSPROBE_LISTEN, ``check --server``, ``sandbox --listen``, the nameserver
strings of c-ares). Never does: I/O or name lookups.
"""

from __future__ import annotations

import functools
import ipaddress


@functools.lru_cache(maxsize=65536)
def normal_address(address: str) -> str:
    """``[::0001]`` → ``::1``; text that is not an IP address comes back as it is."""
    try:
        return str(ipaddress.ip_address(address.strip("[]")))
    except ValueError:
        return address


class PortError(ValueError):
    """The port of ``HOST:PORT`` is not a decimal number 0-65535."""


def split_host_port(text: str, default_port: int | None = None) -> tuple[str, int]:
    """``HOST:PORT`` → (host, port): the one reader of host-and-port text.

    Accepted: ``127.0.0.1:53``, ``[::1]:53``, ``name:9180``; with a
    ``default_port`` the port may be left out (``127.0.0.1``, ``[::1]``, ``::1``).
    Without one, a bare IPv6 address with a port after its last colon
    (``:::9180``) is read as host ``::`` and port 9180. The host comes back
    without brackets and unchecked (callers that need an IP address check it);
    the port is decimal, 0-65535. Raises ValueError saying what is wrong
    (PortError, a ValueError, when it is the port).
    """
    raw = text.strip()
    port: str | None
    if raw.startswith("["):
        end = raw.find("]")
        rest = raw[end + 1:] if end > 0 else "?"
        if rest and not rest.startswith(":"):
            raise ValueError(f"{text!r}: expected [IPv6]:PORT")
        host, port = raw[1:end], rest[1:] or None
    elif raw.count(":") == 1 or (raw.count(":") > 1 and default_port is None):
        host, _, port = raw.rpartition(":")
    else:
        host, port = raw, None
    if not host:
        raise ValueError(f"{text!r}: no host")
    if port is None:
        if default_port is None:
            raise ValueError(f"{text!r}: no port")
        return host, default_port
    if not (port.isascii() and port.isdigit()) or not 0 <= int(port) <= 65535:
        raise PortError(f"{text!r}: port must be a number 0-65535")
    return host, int(port)
