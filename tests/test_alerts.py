"""The Prometheus alert rules (deploy/alerts.yml): valid, each alert fired
by its test series and quiet on the others (deploy/alerts.test.yml), and
reading only metrics the proxy exports."""

from __future__ import annotations

import os
import re
import shutil
import subprocess

from test_dashboard_grafana import exported

DEPLOY = os.path.join(os.path.dirname(__file__), "..", "deploy")
PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"  # .ci/run installs prometheus


def promtool(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([PROMTOOL, *args], cwd=DEPLOY, capture_output=True, text=True,
                          timeout=120)


def test_the_rules_are_valid_and_pass_their_tests():
    checked = promtool("check", "rules", "alerts.yml")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tested = promtool("test", "rules", "alerts.test.yml")
    assert tested.returncode == 0, tested.stdout + tested.stderr


def test_every_alert_has_a_test_that_fires_it():
    rules = open(os.path.join(DEPLOY, "alerts.yml")).read()
    tests = open(os.path.join(DEPLOY, "alerts.test.yml")).read()
    alerts = re.findall(r"^\s+- alert: (\w+)", rules, re.M)
    assert {"BnproxyBanned", "BnproxyBudgetNearlySpent", "BnproxySavingLow",
            "BnproxyStreamsStale", "BnproxyNotReady", "BnproxySharedStateDegraded"} <= set(alerts)
    for alert in alerts:  # a case expecting it, with labels
        assert re.search(rf"alertname: {alert}\n\s+exp_alerts:\n\s+- exp_labels", tests), alert


def test_the_rules_read_only_exported_metrics(tmp_path):
    rules = open(os.path.join(DEPLOY, "alerts.yml")).read()
    names = set(re.findall(r"\bbnproxy_[a-z_]+", rules))
    # the shared state's gauge exists only with --shared-state (tests/test_scale.py)
    missing = names - exported(tmp_path) - {"bnproxy_shared_state_ok"}
    assert not missing, missing
    assert "bnproxy_status" in names
