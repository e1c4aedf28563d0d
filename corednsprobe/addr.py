"""Address text: one way to normalise an IP address's spelling.

Owns: turning address text (``::0001``, ``[::1]``) into one spelling, so that
two spellings of one address compare equal. Never does: I/O or name lookups.
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
