"""Service-health alert rules and the Alertmanager example, checked by the real tools
(promtool, amtool from Debian's prometheus and prometheus-alertmanager; make install
installs them). A missing tool fails these tests: it is not a skip."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def run(*command: str) -> str:
    tool = shutil.which(command[0])
    assert tool is not None, f"{command[0]} is not installed: run deploy/system-deps.sh (make install does)"
    done = subprocess.run([tool, *command[1:]], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout + done.stderr


def test_promtool_check_rules() -> None:
    assert "SUCCESS" in run("promtool", "check", "rules", str(DEPLOY / "prometheus" / "rules.yml"))


def test_promtool_unit_tests_of_the_rules() -> None:
    assert "SUCCESS" in run("promtool", "test", "rules", str(DEPLOY / "prometheus" / "rules.test.yml"))


def test_promtool_check_prometheus_config() -> None:
    assert "SUCCESS" in run(
        "promtool", "check", "config", "--syntax-only", str(DEPLOY / "prometheus" / "prometheus.yml")
    )


def test_amtool_check_alertmanager_config() -> None:
    assert "SUCCESS" in run("amtool", "check-config", str(DEPLOY / "alertmanager" / "alertmanager.yml"))
