"""The shipped alerts: valid, documented, and each fires when it should and only then.

``promtool test rules`` evaluates the real rules file against synthetic series:
every alert fires on the failure it is for, and no alert fires on a healthy
prober whose series carry the blips of a normal day (a few lost packets, a
missed scrape, a one-round diagnosis). The PrometheusRule and the kustomize
components are checked against the same source.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.monitoring import kit

pytestmark = pytest.mark.skipif(shutil.which("promtool") is None,
                                reason="promtool (Debian prometheus) absent")

JOB = {"namespace": "kube-system", "job": "corednsprobe"}
ONE = {**JOB, "instance": "10.244.1.5:9180"}
TWO = {**JOB, "instance": "10.244.2.7:9180"}


def series(name: str, values: str, base: dict[str, str] | None = None,
           **labels: str) -> dict[str, str]:
    lbl = {**(ONE if base is None else base), **labels}
    text = ",".join(f'{k}="{v}"' for k, v in lbl.items())
    return {"series": f"{name}{{{text}}}", "values": values}


def healthy(minutes: int = 120) -> list[dict[str, str]]:
    """Two replicas (one leading) probing two healthy pods; minute 60 has its blips."""
    n, b = minutes, min(60, minutes // 2)
    pod = {"target_kind": "pod", "check": "cluster_ip"}
    out = [
        series("up", f"1x{b - 1} 0 1x{n - b}"),  # one missed scrape
        series("up", f"1x{n}", TWO),
        series("corednsprobe_rounds_total", f"0+12x{n}"),
        series("corednsprobe_rounds_total", f"0+12x{n}", TWO),
        series("corednsprobe_leader", f"1x{n}"),
        series("corednsprobe_leader", f"0x{n}", TWO),
        series("corednsprobe_watch_last_event_age_seconds", f"20x{b - 1} 240 20x{n - b}"),
        series("corednsprobe_watch_last_event_age_seconds", f"20x{n}", TWO),
        series("corednsprobe_target_unhealthy_transitions_total", f"0x{n}", target_kind="pod"),
        series("corednsprobe_remediation_blocked_total", f"0x{n}", reason="hourly_budget"),
        series("corednsprobe_remediations_total", f"0x{n}", action="evict", result="done"),
        series("corednsprobe_remediations_total", f"0x{n}", action="evict",
               result="pdb_blocked"),
        series("corednsprobe_gave_up", f"0x{n}", workload="Deployment/coredns"),
    ]
    for base in (ONE, TWO):
        out += [series("corednsprobe_remediation_mode", f"{int(m == 'evict')}x{n}", base, mode=m)
                for m in ("evict", "delete", "dry-run", "off")]
    for state in ("healthy", "pod", "service_path", "widespread", "syncing"):
        if state == "healthy":
            values = f"1x{b - 1} 0 1x{n - b}"
        elif state == "service_path":  # one round's verdict, gone the next
            values = f"0x{b - 1} 1 0x{n - b}"
        else:
            values = f"0x{n}"
        out.append(series("corednsprobe_diagnosis", values, state=state))
    for name in ("coredns-a", "coredns-b"):
        lossy = name == "coredns-a"
        out += [
            series("corednsprobe_probes_total", f"0+24x{n}", pod=name, outcome="ok", **pod),
            series("corednsprobe_probes_total", f"0x{b - 1} 2 3x{n - b}" if lossy else f"0x{n}",
                   pod=name, outcome="timeout", **pod),
            series("corednsprobe_udp_only_failures_total",
                   f"0x{b - 1} 2 3x{n - b}" if lossy else f"0x{n}", pod=name),
            series("corednsprobe_target_health", f"1x{n}", pod=name, node="n1",
                   state="healthy", target_kind="pod"),
            series("corednsprobe_target_health", f"0x{n}", pod=name, node="n1",
                   state="unhealthy", target_kind="pod"),
        ]
    return out


def replace(base: list[dict[str, str]], *new: dict[str, str]) -> list[dict[str, str]]:
    """``base`` with the series of ``new`` swapped in (or added)."""
    names = {s["series"] for s in new}
    return [s for s in base if s["series"] not in names] + list(new)


# alert -> (input series, [(eval time, [labels of each expected alert])])
Case = tuple[list[dict[str, str]], list[tuple[str, list[dict[str, str]]]]]
POD_ALERT = [("11m", [JOB]), ("24m", [JOB]), ("27m", [])]
CASES: dict[str, list[Case]] = {
    "CoreDNSPodDNSUnhealthy": [
        # judged at minute 10 and evicted before any scrape saw its health gauge at 0:
        # the counter keeps the trace for 15 minutes, then the alert resolves
        (replace(healthy(60), series("corednsprobe_target_unhealthy_transitions_total",
                                     "0x10 1x50", target_kind="pod")), POD_ALERT),
        # unhealthy for an hour, never restarted (remediation off or blocked)
        (replace(healthy(60), series("corednsprobe_target_unhealthy_transitions_total",
                                     "1x60", target_kind="pod"),
                 series("corednsprobe_target_health", "1x60", pod="coredns-b", node="n1",
                        state="unhealthy", target_kind="pod")), [("50m", [JOB])]),
    ],
    "CoreDNSPodRestarted": [
        (replace(healthy(90), series("corednsprobe_remediations_total", "0x10 1x80",
                                     action="evict", result="done")),
         [("12m", [JOB]), ("80m", [])]),
    ],
    "CoreDNSServicePathBroken": [
        (replace(healthy(30), series("corednsprobe_diagnosis", "0x10 1x20",
                                     state="service_path")),
         [("11m", []), ("14m", [JOB])]),
    ],
    "CoreDNSPathBroken": [
        # a path broken for 4 minutes heals (its series goes), then breaks for good
        (replace(healthy(30), series("corednsprobe_path_unhealthy", "_x5 1x3 stale _x3 1x14",
                                     pod="coredns-b", from_node="n2")),
         [("8m", []), ("16m", []), ("21m", [{**JOB, "pod": "coredns-b", "from_node": "n2"}])]),
    ],
    "CoreDNSWidespreadFailure": [
        (replace(healthy(30), series("corednsprobe_diagnosis", "0x10 1x20", state="widespread")),
         [("14m", [JOB])]),
    ],
    "CoreDNSUDPOnlyFailures": [
        (replace(healthy(60), series("corednsprobe_udp_only_failures_total", "0x10 0+6x50",
                                     pod="coredns-b")),
         [("15m", []), ("35m", [{**JOB, "pod": "coredns-b"}])]),
    ],
    "CoreDNSProbeGaveUp": [
        (replace(healthy(30), series("corednsprobe_gave_up", "0x10 1x20",
                                     workload="Deployment/coredns")),
         [("11m", [{**JOB, "workload": "Deployment/coredns"}])]),
    ],
    "CoreDNSProbeRestartBudgetExhausted": [
        (replace(healthy(90), series("corednsprobe_remediation_blocked_total", "0x10 1x80",
                                     reason="hourly_budget")),
         [("12m", [JOB]), ("80m", [])]),
    ],
    "CoreDNSProbeRestartBlockedByPDB": [
        (replace(healthy(30), series("corednsprobe_remediations_total", "0x10 1 2x19",
                                     action="evict", result="pdb_blocked")),
         [("12m", [JOB])]),
    ],
    "CoreDNSProbeDown": [
        (replace(healthy(30), series("up", "1x10 0x20")),
         [("14m", []), ("17m", [ONE])]),
        ([s for s in healthy(30) if not s["series"].startswith("up{")],
         [("10m", [{"job": "corednsprobe"}])]),
    ],
    "CoreDNSProbeNotProbing": [
        (replace(healthy(40), series("corednsprobe_rounds_total", "0+12x10 120x30", TWO)),
         [("18m", []), ("22m", [TWO])]),
    ],
    "CoreDNSProbeWatchStale": [
        (replace(healthy(30), series("corednsprobe_watch_last_event_age_seconds",
                                     "20x10 0+60x20", TWO)),
         [("18m", []), ("25m", [TWO])]),
        (replace(healthy(30), series("corednsprobe_diagnosis", "1x30", state="syncing")),
         [("10m", [ONE])]),
    ],
    "CoreDNSProbeNoLeader": [
        (replace(healthy(30), series("corednsprobe_leader", "1x10 0x20")),
         [("14m", []), ("17m", [JOB])]),
    ],
}


def _render(text: str, labels: dict[str, str]) -> str:
    return re.sub(r"\{\{ \$labels\.(\w+) \}\}", lambda m: labels.get(m.group(1), ""), text)


def expected(alert: str, labels: dict[str, str]) -> dict[str, Any]:
    rule = next(r for r in kit.alerts() if r["alert"] == alert)
    return {"exp_labels": {**labels, **rule.get("labels", {})},
            "exp_annotations": {k: _render(v, labels) for k, v in rule["annotations"].items()}}


def promtool_test(tmp_path: Path, tests: list[dict[str, Any]]) -> None:
    spec = {"rule_files": [str(kit.RULES)], "evaluation_interval": "1m", "tests": tests}
    path = tmp_path / "alerts_test.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    proc = subprocess.run(["promtool", "test", "rules", str(path)], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


ALERTS = [r["alert"] for r in kit.alerts()]


def test_every_alert_has_a_firing_case() -> None:
    assert sorted(CASES) == sorted(ALERTS)


@pytest.mark.parametrize("alert", ALERTS)
def test_alert_fires_on_its_failure(alert: str, tmp_path: Path) -> None:
    tests = [{"interval": "1m", "input_series": inputs,
              "alert_rule_test": [{"eval_time": at, "alertname": alert,
                                   "exp_alerts": [expected(alert, lbl) for lbl in fired]}
                                  for at, fired in evals]}
             for inputs, evals in CASES[alert]]
    assert any(fired for _, evals in CASES[alert] for _, fired in evals)
    promtool_test(tmp_path, tests)


def test_no_alert_fires_on_a_healthy_briefly_lossy_prober(tmp_path: Path) -> None:
    checks = [{"eval_time": at, "alertname": alert, "exp_alerts": []}
              for at in ("5m", "30m", "60m", "61m", "62m", "65m", "75m", "119m")
              for alert in ALERTS]
    promtool_test(tmp_path, [{"interval": "1m", "input_series": healthy(),
                              "alert_rule_test": checks}])


def test_the_quiet_case_would_catch_a_firing_alert(tmp_path: Path) -> None:
    """The baseline is not vacuous: promtool fails when an expected silence is broken."""
    broken = replace(healthy(30), series("corednsprobe_gave_up", "1x30",
                                         workload="Deployment/coredns"))
    with pytest.raises(AssertionError, match="CoreDNSProbeGaveUp"):
        promtool_test(tmp_path, [{"interval": "1m", "input_series": broken, "alert_rule_test": [
            {"eval_time": "10m", "alertname": "CoreDNSProbeGaveUp", "exp_alerts": []}]}])


def test_promtool_checks_the_rules_file_and_the_prometheusrule(tmp_path: Path) -> None:
    spec = yaml.safe_load(kit.PROMETHEUS_RULE.read_text())["spec"]
    extracted = tmp_path / "from-prometheusrule.yaml"
    extracted.write_text(yaml.safe_dump(spec))
    for path in (kit.RULES, extracted):
        proc = subprocess.run(["promtool", "check", "rules", str(path)], capture_output=True,
                              text=True, timeout=60)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert f"SUCCESS: {len(ALERTS)} rules found" in proc.stdout


def test_the_prometheusrule_is_generated_from_the_rules_file() -> None:
    assert kit.PROMETHEUS_RULE.read_text() == kit.prometheus_rule(), (
        "prometheusrule.yaml is stale: python3 -m tests.monitoring.kit --write")


def _man_sections() -> dict[str, str]:
    page = kit.OUTPUT_PAGE.read_text()
    alerts = page.split("\n.SH ALERTS\n", 1)[1].split("\n.SH ", 1)[0]
    parts = re.split(r"^\.SS (\S+)\n", alerts, flags=re.M)
    return dict(zip(parts[1::2], parts[2::2], strict=True))


@pytest.mark.parametrize("alert", ALERTS)
def test_every_alert_is_explained_and_has_a_runbook_section(alert: str) -> None:
    rule = next(r for r in kit.alerts() if r["alert"] == alert)
    notes = rule["annotations"]
    assert set(notes) == {"summary", "description", "runbook_url"}
    assert len(notes["summary"]) > 20 and len(notes["description"]) > 80
    assert rule["labels"]["severity"] in {"info", "warning", "critical"}
    assert notes["runbook_url"] == f"man:corednsprobe-output(7)#{alert}"
    section = _man_sections()[alert]
    assert "Check:" in section and "Do:" in section, section


def _kustomize(tmp_path: Path, *components: str) -> list[dict[str, Any]]:
    overlay = tmp_path / "overlay"
    overlay.mkdir()
    deploy = os.path.relpath(kit.ROOT / "deploy", overlay)
    (overlay / "kustomization.yaml").write_text(yaml.safe_dump({
        "resources": [deploy], "components": [f"{deploy}/{c}" for c in components]}))
    proc = subprocess.run(["kubectl", "kustomize", str(overlay)], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return list(yaml.safe_load_all(proc.stdout))


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl absent")
@pytest.mark.parametrize(("components", "monitor"), [
    (("monitoring",), "ServiceMonitor"),
    (("monitoring", "monitoring/podmonitor"), "PodMonitor"),
])
def test_the_monitoring_component_adds_the_rules_and_one_monitor(
        tmp_path: Path, components: tuple[str, ...], monitor: str) -> None:
    objs = _kustomize(tmp_path, *components)
    kinds = [o["kind"] for o in objs]
    assert kinds.count("PrometheusRule") == 1
    assert [k for k in kinds if k.endswith("Monitor")] == [monitor]
    rule = next(o for o in objs if o["kind"] == "PrometheusRule")
    assert rule["spec"] == kit.load_rules()
    mon = next(o for o in objs if o["kind"] == monitor)
    service = next(o for o in objs if o["kind"] == "Service")
    pod_labels = next(o for o in objs if o["kind"] == "Deployment")[
        "spec"]["template"]["metadata"]["labels"]
    selected = service["metadata"]["labels"] if monitor == "ServiceMonitor" else pod_labels
    assert mon["spec"]["selector"]["matchLabels"].items() <= selected.items()
    assert selected[mon["spec"]["jobLabel"]] == "corednsprobe"  # the job the alerts name
    endpoint = (mon["spec"].get("endpoints") or mon["spec"]["podMetricsEndpoints"])[0]
    assert endpoint["honorLabels"] is True  # corednsprobe's `pod` label survives
