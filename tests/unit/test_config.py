"""Settings: defaults, validation of every variable at once, and the CLI's exit 2."""

from __future__ import annotations

import subprocess
import sys

import pytest

from corednsprobe.config import Settings, SettingsError, markdown_table


def test_defaults_without_environment() -> None:
    s = Settings.from_env({})
    assert s.timeout == 1.0
    assert s.interval == 5.0
    assert s.cluster_domain == "cluster.local"
    assert (s.namespace, s.service) == ("kube-system", "kube-dns")
    assert (s.log_level, s.log_format) == ("info", "auto")


def test_values_are_parsed_and_normalised() -> None:
    s = Settings.from_env(
        {
            "COREDNSPROBE_TIMEOUT": "0.25",
            "COREDNSPROBE_CLUSTER_DOMAIN": "Example.Internal.",
            "COREDNSPROBE_LOG_FORMAT": "JSON",
        }
    )
    assert s.timeout == 0.25
    assert s.cluster_domain == "example.internal"
    assert s.log_format == "json"


@pytest.mark.parametrize(
    ("variable", "value", "valid"),
    [
        ("COREDNSPROBE_TIMEOUT", "abc", "seconds"),
        ("COREDNSPROBE_TIMEOUT", "0", "0.01 to 30"),
        ("COREDNSPROBE_TIMEOUT", "nan", "seconds"),
        ("COREDNSPROBE_INTERVAL", "-1", "seconds"),
        ("COREDNSPROBE_CLUSTER_DOMAIN", "bad domain", "DNS domain"),
        ("COREDNSPROBE_NAMESPACE", "Kube_System", "Kubernetes name"),
        ("COREDNSPROBE_LOG_LEVEL", "verbose", "one of debug, info"),
        ("COREDNSPROBE_LOG_FORMAT", "xml", "one of auto, json, console"),
        ("COREDNSPROBE_TIMOUT", "1", "a known setting"),
    ],
)
def test_bad_value_names_variable_value_and_what_is_valid(
    variable: str, value: str, valid: str
) -> None:
    with pytest.raises(SettingsError) as err:
        Settings.from_env({variable: value})
    message = str(err.value)
    assert variable in message
    assert repr(value) in message
    assert valid in message


def test_every_bad_variable_is_reported_at_once() -> None:
    with pytest.raises(SettingsError) as err:
        Settings.from_env({"COREDNSPROBE_TIMEOUT": "x", "COREDNSPROBE_INTERVAL": "y"})
    assert [p.variable for p in err.value.problems] == [
        "COREDNSPROBE_TIMEOUT",
        "COREDNSPROBE_INTERVAL",
    ]


def test_any_subcommand_exits_2_on_bad_settings() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "corednsprobe", "version"],
        env={"COREDNSPROBE_INTERVAL": "soon", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "COREDNSPROBE_INTERVAL='soon'" in proc.stderr
    assert proc.stdout == ""


def test_table_lists_every_setting_once() -> None:
    table = markdown_table()
    for name in Settings.__dataclass_fields__:
        assert table.count(f"`COREDNSPROBE_{name.upper()}`") == 1


def test_service_links_injected_by_the_kubelet_are_not_settings() -> None:
    env = {
        "COREDNSPROBE_SERVICE_HOST": "10.96.12.3",
        "COREDNSPROBE_SERVICE_PORT": "9180",
        "COREDNSPROBE_SERVICE_PORT_HTTP": "9180",
        "COREDNSPROBE_PORT": "tcp://10.96.12.3:9180",
        "COREDNSPROBE_PORT_9180_TCP": "tcp://10.96.12.3:9180",
        "COREDNSPROBE_PORT_9180_TCP_PROTO": "tcp",
        "COREDNSPROBE_PORT_9180_TCP_PORT": "9180",
        "COREDNSPROBE_PORT_9180_TCP_ADDR": "10.96.12.3",
        "COREDNSPROBE_METRICS_SERVICE_HOST": "fd00::1",
        "COREDNSPROBE_SERVICE": "kube-dns-alt",  # a real setting beside them
    }
    assert Settings.from_env(env).service == "kube-dns-alt"


@pytest.mark.parametrize(("name", "value"), [
    ("COREDNSPROBE_LISTEN_PORT", "abc"),  # looks like a link name, not a link value
    ("COREDNSPROBE_SERVICE_HOSTS", "10.0.0.1"),
    ("COREDNSPROBE_PORTS", "53"),
])
def test_look_alikes_of_service_links_are_still_rejected(name: str, value: str) -> None:
    with pytest.raises(SettingsError, match=name):
        Settings.from_env({name: value})


@pytest.mark.parametrize(("env", "variable", "valid"), [
    # each check is judged on its own window: 60 s / 5 s = 12 outcomes of each check
    ({"COREDNSPROBE_FAILURE_RATIO": "1"}, "COREDNSPROBE_FAILURE_RATIO", "at most 0.68"),
    ({"COREDNSPROBE_FAILURE_RATIO": "0.7"}, "COREDNSPROBE_FAILURE_RATIO", "at most 0.68"),
    ({"COREDNSPROBE_MIN_SAMPLES": "13"}, "COREDNSPROBE_MIN_SAMPLES", "at most 12"),
    ({"COREDNSPROBE_MIN_SAMPLES": "25"}, "COREDNSPROBE_MIN_SAMPLES", "at most 12"),
    ({"COREDNSPROBE_WINDOW": "10", "COREDNSPROBE_INTERVAL": "5"},  # 2 outcomes < 5 samples
     "COREDNSPROBE_MIN_SAMPLES", "at most 2"),
])
def test_settings_that_could_never_judge_a_dead_target_stop_start_up(
        env: dict[str, str], variable: str, valid: str) -> None:
    with pytest.raises(SettingsError) as err:
        Settings.from_env(env)
    assert variable in str(err.value) and valid in str(err.value)


def test_defaults_can_judge_a_dead_target() -> None:
    from corednsprobe.stats import Z_CHECK, failure_lower_bound

    s = Settings.from_env({})
    n = int(s.window / s.interval) * 2
    assert n >= s.min_samples and failure_lower_bound(s.min_samples, s.min_samples) >= 0.5
    per_check = int(s.window / s.interval)  # and a check that fails every time, alone
    assert per_check >= s.min_samples
    assert failure_lower_bound(per_check, per_check, Z_CHECK) >= s.failure_ratio


def test_settings_that_judge_a_wholly_failing_check_start() -> None:
    s = Settings.from_env({"COREDNSPROBE_WINDOW": "30", "COREDNSPROBE_FAILURE_RATIO": "0.5"})
    assert s.window == 30  # 6 outcomes of each check: 6 of 6 is sure of more than half


def test_listen_defaults_to_loopback_off_cluster_and_an_explicit_address_wins() -> None:
    unset = Settings.from_env({})
    assert unset.listen_address(in_cluster=False) == ("127.0.0.1", 9180)
    assert unset.listen_address(in_cluster=True) == ("0.0.0.0", 9180)
    given = Settings.from_env({"COREDNSPROBE_LISTEN": "[::]:9000"})
    assert given.listen_address(in_cluster=False) == given.listen_address(in_cluster=True)
    assert given.listen_address(in_cluster=False) == ("::", 9000)
