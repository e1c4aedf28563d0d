"""HOST:PORT text, read in one place: COREDNSPROBE_LISTEN, check --server, sandbox --listen."""

from __future__ import annotations

import pytest

from corednsprobe.addr import normal_address, split_host_port
from corednsprobe.config import Settings, SettingsError
from corednsprobe.sandbox.command import _listen


@pytest.mark.parametrize(("text", "default", "expected"), [
    ("0.0.0.0:9180", None, ("0.0.0.0", 9180)),
    ("[::]:9180", None, ("::", 9180)),
    (":::9180", None, ("::", 9180)),
    ("localhost:0", None, ("localhost", 0)),
    (" 127.0.0.1:65535 ", None, ("127.0.0.1", 65535)),
    ("127.0.0.1", 53, ("127.0.0.1", 53)),
    ("[::1]", 53, ("::1", 53)),
    ("::1", 53, ("::1", 53)),
    ("[fd00::1]:5353", 53, ("fd00::1", 5353)),
])
def test_host_port_forms(text: str, default: int | None, expected: tuple[str, int]) -> None:
    assert split_host_port(text, default) == expected


@pytest.mark.parametrize(("text", "default"), [
    ("127.0.0.1", None), ("[::1]", None), (":9180", None), ("h:65536", None), ("h:-1", None),
    ("h:+80", None), ("h:\uff180", None), ("h:", None), ("[::1", 53), ("[::1]x", 53), ("", 53),
])
def test_bad_host_port_is_a_value_error(text: str, default: int | None) -> None:
    with pytest.raises(ValueError, match=r"port|host|expected"):
        split_host_port(text, default)


def test_every_reader_of_host_port_agrees() -> None:
    env = {"COREDNSPROBE_LISTEN": "[::1]:9181"}
    assert Settings.from_env(env).listen == ("::1", 9181) == _listen("[::1]:9181")
    with pytest.raises(SettingsError, match="COREDNSPROBE_LISTEN"):
        Settings.from_env({"COREDNSPROBE_LISTEN": "127.0.0.1"})
    with pytest.raises(ValueError, match="--listen"):
        _listen("127.0.0.1")


def test_normal_address_gives_one_spelling() -> None:
    assert normal_address("[::0001]") == "::1"
    assert normal_address("not-an-ip") == "not-an-ip"
