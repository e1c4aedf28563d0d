"""A sandbox pod's health and ready ports: a tiny HTTP server beside its DNS server.

Run inside the pod's network namespace as
``python -I -S health.py <ip> <port> [<dns-port> [<ready-port>]]`` (standard
library only, so that it starts in a few tens of milliseconds). As CoreDNS's
``health`` plugin, ``GET /health`` on ``<port>`` answers 200 "OK"; as its
``ready`` plugin, ``GET /ready`` on ``<ready-port>`` answers 200 "OK" — both
while the pod's DNS server accepts TCP connections on ``<ip>:<dns-port>`` (the
server process is up), 503 otherwise; any other path is 404. Both stay up when
only UDP is broken, as CoreDNS's do (coredns/coredns#3617).

Never does: look at UDP, or import anything beyond the standard library.
"""

from __future__ import annotations

import socket
import sys
import threading

IO_TIMEOUT_SECONDS = 2.0
CHECK_TIMEOUT_SECONDS = 0.5
MAX_REQUEST_BYTES = 8192


def dns_server_accepts(ip: str, dns_port: int) -> bool:
    """True when a TCP connection to the DNS server succeeds."""
    try:
        with socket.create_connection((ip, dns_port), timeout=CHECK_TIMEOUT_SECONDS):
            return True
    except OSError:
        return False


def _response(healthy: bool | None) -> bytes:
    """200 "OK", 503, or 404 (``None``: a path this port does not serve)."""
    if healthy is None:
        status, body = "404 Not Found", b"404 page not found\n"
    else:
        status, body = ("200 OK", b"OK") if healthy else ("503 Service Unavailable", b"down\n")
    head = (f"HTTP/1.1 {status}\r\nContent-Type: text/plain\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n")
    return head.encode() + body


def _read_request(conn: socket.socket) -> bytes | None:
    """The request's path, read up to the end of its head; None when the client gave up."""
    received = b""
    while b"\r\n\r\n" not in received and len(received) < MAX_REQUEST_BYTES:
        chunk = conn.recv(1024)
        if not chunk:
            return None
        received += chunk
    parts = received.split(b"\r\n", 1)[0].split(b" ")
    return parts[1].split(b"?", 1)[0] if len(parts) > 1 else b""


def _answer(conn: socket.socket, ip: str, dns_port: int, path: bytes) -> None:
    conn.settimeout(IO_TIMEOUT_SECONDS)
    try:
        asked = _read_request(conn)
        if asked is not None:
            conn.sendall(_response(dns_server_accepts(ip, dns_port) if asked == path else None))
    except OSError:
        pass
    finally:
        conn.close()


def serve(ip: str, port: int, dns_port: int, path: bytes = b"/health") -> None:
    """Answer ``GET <path>`` on ``port``, one connection at a time, until killed."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((ip, port))
        listener.listen(64)
        while True:
            conn, _ = listener.accept()
            _answer(conn, ip, dns_port, path)


def main(argv: list[str]) -> int:
    if len(argv) not in (2, 3, 4):
        print("usage: health.py <ip> <port> [<dns-port> [<ready-port>]]", file=sys.stderr)
        return 2
    dns_port = int(argv[2]) if len(argv) >= 3 else 53
    if len(argv) == 4:
        threading.Thread(target=serve, args=(argv[0], int(argv[3]), dns_port, b"/ready"),
                         daemon=True).start()
    serve(argv[0], int(argv[1]), dns_port)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
