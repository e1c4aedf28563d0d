"""The demo's story as a person reads it: one scripted fault, from injection to
recovery, in the rendered output of a real `corednsprobe demo` process.

Uses the in-process DNS backend: no root needed.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
import sys

import pytest

from tests.e2e.test_http_and_process import _env, _free_port

ROUND = re.compile(r"^t=\s*[0-9.]+s round ", re.M)


def rounds(text: str) -> list[str]:
    """Each round's block of lines (the round line up to the next round line)."""
    starts = [m.start() for m in ROUND.finditer(text)]
    return [text[a:b] for a, b in zip(starts, [*starts[1:], len(text)], strict=True)]


@pytest.fixture(scope="module")
def demo_output() -> str:
    """One demo run, stdout and stderr on one pipe (as `demo 2>&1 | less` shows it)."""
    if shutil.which("openssl") is None:
        pytest.skip("the sandbox's TLS needs openssl")
    proc = subprocess.run(
        [sys.executable, "-m", "corednsprobe", "demo", "--pods", "3", "--duration", "22",
         "--fault", "0=udp-drop@1"],
        env=_env(COREDNSPROBE_LISTEN=f"127.0.0.1:{_free_port()}", COREDNSPROBE_INTERVAL="0.5",
                 COREDNSPROBE_WINDOW="4", COREDNSPROBE_MIN_POD_AGE="1",
                 COREDNSPROBE_CONFIRM="2", COREDNSPROBE_SETTLE_PERIOD="1",
                 COREDNSPROBE_LOG_LEVEL="info"),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=90, check=False)
    text = proc.stdout.decode()
    assert proc.returncode == 0, text
    return text


def test_the_round_that_evicts_prints_the_diagnosis_it_acted_on(demo_output: str) -> None:
    blocks = rounds(demo_output)
    acted = [b for b in blocks if "act — evict " in b]
    assert acted, demo_output
    pod = re.search(r"act — evict (\S+);", acted[0])
    assert pod is not None
    assert "diagnosis: pod" in acted[0] and f"restart candidates: {pod[1]}" in acted[0]
    for b in blocks:  # never a candidate beside "every judged target answers"
        has_candidates = "restart candidates: none" not in b
        assert not (has_candidates and "idle — every judged target answers" in b), b
        if "diagnosis: widespread" in b or "diagnosis: pod" in b:
            assert "idle — no pod judged yet" not in b, b


def test_the_evicted_pod_shows_terminating_and_slots_are_shown(demo_output: str) -> None:
    after = demo_output.split("act — evict ", 1)[1]
    evicted = after.split(";", 1)[0]
    assert re.search(rf"^\s+0\s+{re.escape(evicted)}\s+\S+\s+terminating\s", after, re.M), after
    assert " grace " not in demo_output
    assert "SLOT  TARGET" in demo_output and "SURE%" in demo_output


def test_the_recovery_is_shown_and_summarised(demo_output: str) -> None:
    assert re.search(r"^>>> recovered: after evict \S+ every pod of Deployment/coredns is judged "
                     r"healthy \(replacement \S+\); detect [0-9.]+s, act [0-9.]+s, "
                     r"recover [0-9.]+s$", demo_output, re.M), demo_output
    summary = demo_output.split("summary after ", 1)[1]
    assert "faults injected: 1" in summary and "0=udp-drop" in summary
    assert "restarts: 1" in summary and "→ done" in summary
    assert re.search(r"time to detect: [0-9.]+s", summary), summary
    assert re.search(r"time to repair: [0-9.]+s", summary), summary
    assert re.search(r"diagnoses: .*pod [0-9]+ times", summary), summary


def test_piped_logs_are_console_lines_not_json(demo_output: str) -> None:
    assert "remediation_started" in demo_output  # a log line did arrive on the pipe
    assert not [line for line in demo_output.splitlines() if line.lstrip().startswith("{")]


@pytest.mark.parametrize(("args", "said"), [
    (["--duration", "-1"], "--duration -1: expected a number of seconds greater than 0"),
    (["--duration", "0"], "greater than 0"),
    (["--pods", "3", "--fault", "5=udp-drop@1"], "no slot 5 with --pods 3 (slots are 0 to 2)"),
    (["--pods", "1000"], "--pods 1000: at most 381"),
    (["--pods", "0"], "--pods must be at least 1"),
])
async def test_bad_demo_input_is_refused_at_once(args: list[str], said: str) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "corednsprobe", "demo", *args, env=_env(),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 15)
    assert proc.returncode == 2, err.decode()
    assert said in err.decode() and not out and "Traceback" not in err.decode()
