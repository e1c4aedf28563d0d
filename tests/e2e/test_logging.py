"""What the process writes to stderr is JSON, one line per record, also for other libraries.

A malformed HTTP request makes aiohttp log an error with a traceback; before,
that was an 11-line plain-text block in the middle of the JSON log.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import socket
import subprocess
import sys

import pytest

from tests.e2e.test_http_and_process import _env, _free_port, _wait_http

BAD_LENGTH = b"GET /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n"
TLS_HELLO = b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03garbage\r\n\r\n"  # to a plain port
BAD_REQUESTS = [BAD_LENGTH, TLS_HELLO, BAD_LENGTH]


def _send(port: int, payload: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(payload)
        return sock.recv(200)


@pytest.mark.skipif(shutil.which("openssl") is None, reason="the sandbox's TLS needs openssl")
async def test_a_malformed_http_request_is_one_json_line_per_record() -> None:
    port = _free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "corednsprobe", "demo", "--pods", "1", "--duration", "60",
        env=_env(COREDNSPROBE_LISTEN=f"127.0.0.1:{port}", COREDNSPROBE_LOG_FORMAT="json"),
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        await _wait_http(f"http://127.0.0.1:{port}/metrics", within=30)
        for payload in BAD_REQUESTS:
            reply = await asyncio.to_thread(_send, port, payload)
            assert reply.startswith(b"HTTP/1.0 400"), reply
        proc.send_signal(signal.SIGINT)
        _, err = await asyncio.wait_for(proc.communicate(), 20)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    lines = err.decode().splitlines()
    records = [json.loads(line) for line in lines]  # every line is a JSON document
    assert all({"event", "level", "timestamp"} <= set(r) for r in records), lines
    bad = [r for r in records if r.get("logger") == "aiohttp.server"]
    # aiohttp logs each bad Content-Length as an error with its traceback (a
    # TLS hello only at debug level, below the demo's warning level)
    assert len(bad) == BAD_REQUESTS.count(BAD_LENGTH), lines
    assert all(r["level"] == "error" and "BadHttpMessage" in r["exception"] for r in bad), bad
