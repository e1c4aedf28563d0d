"""A sandbox pod's health port: a tiny HTTP server beside its DNS server.

Run inside the pod's network namespace as
``python -I -S health.py <ip> <port> [<dns-port>]`` (standard library only, so
that it starts in a few tens of milliseconds). ``GET`` of any path answers 200
while the pod's DNS server accepts TCP connections on ``<ip>:<dns-port>`` and
503 otherwise: it stays up when only UDP is broken, as CoreDNS's health port
does.

Never does: look at UDP, or import anything beyond the standard library.
"""

from __future__ import annotations

import socket
import sys

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


def _response(healthy: bool) -> bytes:
    status, body = ("200 OK", b"OK\n") if healthy else ("503 Service Unavailable", b"down\n")
    head = (f"HTTP/1.1 {status}\r\nContent-Type: text/plain\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n")
    return head.encode() + body


def _read_request(conn: socket.socket) -> bool:
    """Read up to the end of the request head; False when the client gave up."""
    received = b""
    while b"\r\n\r\n" not in received and len(received) < MAX_REQUEST_BYTES:
        chunk = conn.recv(1024)
        if not chunk:
            return False
        received += chunk
    return True


def _answer(conn: socket.socket, ip: str, dns_port: int) -> None:
    conn.settimeout(IO_TIMEOUT_SECONDS)
    try:
        if _read_request(conn):
            conn.sendall(_response(dns_server_accepts(ip, dns_port)))
    except OSError:
        pass
    finally:
        conn.close()


def serve(ip: str, port: int, dns_port: int) -> None:
    """Answer one connection at a time, until killed."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((ip, port))
        listener.listen(64)
        while True:
            conn, _ = listener.accept()
            _answer(conn, ip, dns_port)


def main(argv: list[str]) -> int:
    if len(argv) not in (2, 3):
        print("usage: health.py <ip> <port> [<dns-port>]", file=sys.stderr)
        return 2
    dns_port = int(argv[2]) if len(argv) == 3 else 53
    serve(argv[0], int(argv[1]), dns_port)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
