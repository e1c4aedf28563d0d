"""The monitoring kit's files, and the PrometheusRule generated from the plain rules file.

``deploy/monitoring/corednsprobe.rules.yaml`` is the one source of the
alerts; ``python3 -m tests.monitoring.kit --write`` regenerates
``deploy/monitoring/prometheusrule.yaml`` from it, and the tests fail while
the two disagree.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
MONITORING = ROOT / "deploy" / "monitoring"
RULES = MONITORING / "corednsprobe.rules.yaml"
PROMETHEUS_RULE = MONITORING / "prometheusrule.yaml"
DASHBOARD = MONITORING / "grafana-dashboard.json"
OUTPUT_PAGE = ROOT / "docs" / "corednsprobe-output.7"

HEADER = """\
# GENERATED from corednsprobe.rules.yaml by `python3 -m tests.monitoring.kit --write`;
# edit that file, not this one. For the Prometheus Operator: a rule selector often
# wants a label of its own (kube-prometheus-stack: release=<its release name>).
"""


def load_rules() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(RULES.read_text())
    return data


def alerts() -> list[dict[str, Any]]:
    return [r for g in load_rules()["groups"] for r in g["rules"] if "alert" in r]


def dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return data


def dashboard_queries(job: str = "corednsprobe",
                      rate_interval: str = "1m") -> list[tuple[str, str]]:
    """(panel title, PromQL) for every query, Grafana's variables as Grafana would fill them."""
    fill = {"$job": job, "$instance": ".+", "$__rate_interval": rate_interval}
    out = []
    for panel in dashboard()["panels"]:
        for target in panel.get("targets", ()):
            expr = target["expr"]
            for var, value in fill.items():
                expr = expr.replace(var, value)
            out.append((panel["title"], expr))
    return out


def metric_names(text: str) -> set[str]:
    return set(re.findall(r"\bcorednsprobe_[a-z_]+\b", text))


class _Dumper(yaml.SafeDumper):
    """Multi-line strings (the expressions) as literal blocks, as in the source."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def prometheus_rule() -> str:
    """The PrometheusRule object holding exactly the plain file's groups."""
    obj = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {"name": "corednsprobe", "namespace": "kube-system"},
        "spec": load_rules(),
    }
    return HEADER + yaml.dump(obj, Dumper=_Dumper, sort_keys=False, width=100)


if __name__ == "__main__":
    if sys.argv[1:] == ["--write"]:
        PROMETHEUS_RULE.write_text(prometheus_rule())
    else:
        sys.stdout.write(prometheus_rule())
