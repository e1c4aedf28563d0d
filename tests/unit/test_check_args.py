"""Pure parts of `corednsprobe check` and the application view's search expansion."""

from __future__ import annotations

import argparse

import pytest

from corednsprobe.cli.check import build_check, parse_server, render_table
from corednsprobe.cli.main import build_parser
from corednsprobe.config import Settings
from corednsprobe.model import Check, Outcome, ProbeResult, Target, TargetKind
from corednsprobe.probe.appview import search_candidates


@pytest.mark.parametrize(("text", "expected"), [
    ("127.0.0.1", ("127.0.0.1", 53)),
    ("127.0.0.1:5353", ("127.0.0.1", 5353)),
    ("[::1]:53", ("::1", 53)),
    ("[::1]", ("::1", 53)),
    ("::1", ("::1", 53)),
    ("[fd00::0001]:5353", ("fd00::1", 5353)),
])
def test_server_syntax(text: str, expected: tuple[str, int]) -> None:
    assert parse_server(text) == expected


def test_server_port_out_of_range_says_so() -> None:
    for text in ("127.0.0.1:99999", "127.0.0.1:0", "[::1]:65536"):
        with pytest.raises(argparse.ArgumentTypeError, match="port must be 1-65535"):
            parse_server(text)


@pytest.mark.parametrize("text", ["host:53", "127.0.0.1:0", "127.0.0.1:x", "[::1", "[::1]x",
                                  "1.2.3.4.5", ""])
def test_bad_server_syntax_is_refused(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        parse_server(text)


def test_search_makes_an_application_view_check_with_cluster_default_name() -> None:
    parser = build_parser()
    plain = parser.parse_args(["check", "--server", "127.0.0.1"])
    app = parser.parse_args(["check", "--server", "127.0.0.1", "--name", "kubernetes.default",
                             "--search", "default.svc.x.y,svc.x.y", "--ndots", "2"])
    settings = Settings(cluster_domain="x.y")
    assert build_check(plain, settings) == Check("check", "kubernetes.default.svc.x.y", ndots=5)
    built = build_check(app, settings)
    assert built.application_view and built.search == ("default.svc.x.y", "svc.x.y")
    assert built.ndots == 2


def test_search_candidates_follow_resolv_conf_order() -> None:
    search = ("default.svc.cluster.local", "svc.cluster.local")
    assert list(search_candidates("kubernetes.default", search, 5)) == [
        "kubernetes.default.default.svc.cluster.local.",
        "kubernetes.default.svc.cluster.local.", "kubernetes.default."]
    assert list(search_candidates("kubernetes.default", search, 1)) == [
        "kubernetes.default.", "kubernetes.default.default.svc.cluster.local.",
        "kubernetes.default.svc.cluster.local."]
    assert list(search_candidates("kubernetes.default.", search, 5)) == ["kubernetes.default."]


def test_table_columns_line_up() -> None:
    target = Target(TargetKind.SERVICE, "127.0.0.1", 5353)
    results = [ProbeResult(target, Check("c", "a.b"), Outcome.OK, "NOERROR", ("10.0.0.1",),
                           0.00123),
               ProbeResult(target, Check("c", "much.longer.name"), Outcome.TIMEOUT)]
    lines = render_table(results).splitlines()
    columns = [line.index(word) for line, word in zip(lines, ["OUTCOME", "ok", "timeout"],
                                                       strict=False)]
    assert columns == [lines[0].index("OUTCOME")] * 3
    assert "1.23" in lines[1] and lines[-1] == "1 of 2 probes ok"
