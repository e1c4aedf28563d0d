"""A throw-away serving certificate for the sandbox API server.

kubectl (client-go) never sends a bearer token over plain HTTP
(kubernetes/kubectl#744), so a sandbox that authenticates by token must speak
HTTPS. Owns: making a self-signed certificate for the listen address with the
``openssl`` command and the server's ``SSLContext``. Never does: trust
anything; the certificate lives in a private temporary directory removed by
the caller.
"""

from __future__ import annotations

import asyncio
import ipaddress
import ssl
from pathlib import Path


class CertificateError(Exception):
    """The certificate could not be made."""


def _subject_alt_name(host: str, also: tuple[str, ...] = ()) -> str:
    extra = "".join(f",IP:{ip}" for ip in also)
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return f"subjectAltName=DNS:{host},DNS:localhost,IP:127.0.0.1{extra}"
    return f"subjectAltName=IP:{host},DNS:localhost{extra}"


async def make_certificate(directory: Path, host: str,
                           also: tuple[str, ...] = ()) -> tuple[Path, Path]:
    """Write ``tls.crt`` and ``tls.key`` (P-256, valid one day) into ``directory``."""
    cert, key = directory / "tls.crt", directory / "tls.key"
    command = ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
               "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1", "-subj",
               "/CN=corednsprobe-sandbox", "-addext", _subject_alt_name(host, also),
               "-keyout", str(key), "-out", str(cert)]
    try:
        process = await asyncio.create_subprocess_exec(
            *command, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
    except FileNotFoundError:
        raise CertificateError("the openssl command is missing; install openssl or run "
                               "the sandbox without TLS") from None
    _, err = await asyncio.wait_for(process.communicate(), timeout=30)
    if process.returncode != 0:
        raise CertificateError(f"openssl failed: {err.decode(errors='replace').strip()}")
    key.chmod(0o600)
    return cert, key


def server_context(cert: Path, key: Path) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return context
