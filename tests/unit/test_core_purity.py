"""The core (`journeystream.core`) is pure: no I/O clients, no event loop, no threads, no
clock. Decisions are functions of the events and watermarks alone (SPEC §2 "Time": replay
never expires journeys by wall clock), so the same input gives the same facts anywhere."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import journeystream.core

CORE = Path(journeystream.core.__file__).parent
MODULES = sorted(CORE.glob("*.py"))

FORBIDDEN_MODULES = frozenset(
    {
        "faust",
        "mode",
        "aiokafka",
        "clickhouse_connect",
        "chdb",
        "prometheus_client",
        "asyncio",
        "socket",
        "threading",
        "multiprocessing",
        "concurrent",
        "subprocess",
        "time",
        "random",
        "uuid",
        "os",
    }
)
ALLOWED_ELSEWHERE = {"yaml": {"alerts.py"}}  # alert rules are YAML documents
PURE_ELSEWHERE = ("journeystream.core", "journeystream.errors")  # exception classes only
CLOCK_CALLS = frozenset({"now", "utcnow", "today", "time", "time_ns", "monotonic", "perf_counter"})
CLOCK_OWNERS = frozenset({"datetime", "date", "time"})


def _imports(tree: ast.AST, package: str) -> list[tuple[str, int]]:
    found: list[tuple[str, int]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the package
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                found.append((f"{base}.{node.module}" if node.module else base, node.lineno))
            elif node.module:
                found.append((node.module, node.lineno))
    return found


def _dotted(node: ast.expr) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return "?"


def violations(source: str, filename: str) -> list[str]:
    """Every impure import or clock read in one core module's source."""
    tree = ast.parse(source, filename)
    problems: list[str] = []
    for module, line in _imports(tree, "journeystream.core"):
        top = module.split(".")[0]
        confined = top in ALLOWED_ELSEWHERE and filename not in ALLOWED_ELSEWHERE[top]
        if top in FORBIDDEN_MODULES or confined:
            problems.append(f"{filename}:{line} imports {module}")
        elif top == "journeystream" and not module.startswith(PURE_ELSEWHERE):
            problems.append(f"{filename}:{line} imports {module} from outside the core")
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        if isinstance(node.func, ast.Attribute) and node.func.attr in CLOCK_CALLS:
            owner = _dotted(node.func.value).split(".")[-1]
            if owner in CLOCK_OWNERS:
                problems.append(f"{filename}:{node.lineno} reads the clock: {_dotted(node.func)}()")
        elif _dotted(node.func) in ("__import__", "importlib.import_module", "import_module"):
            problems.append(f"{filename}:{node.lineno} imports dynamically")
    return problems


def test_the_core_has_the_expected_modules() -> None:
    names = {path.name for path in MODULES}
    expected = {"timeline.py", "identity.py", "journeys.py", "irritants.py", "state.py", "pipeline.py"}
    assert expected <= names


@pytest.mark.parametrize("path", MODULES, ids=lambda path: path.name)
def test_core_module_is_pure(path: Path) -> None:
    assert violations(path.read_text(encoding="utf-8"), path.name) == []


def test_the_checker_catches_what_it_forbids() -> None:
    source = "\n".join(
        [
            "import time",
            "import asyncio.tasks",
            "from aiokafka import AIOKafkaProducer",
            "from datetime import datetime, date",
            "import yaml",
            "from journeystream.sinks import store",
            "from ..runtime import app",
            "stamp = datetime.now()",
            "day = date.today()",
            "utc = datetime.datetime.utcnow()",
            "t = time.monotonic()",
            "m = __import__('socket')",
        ]
    )
    found = violations(source, "example.py")
    assert len(found) == 11, found
    assert violations("import yaml\n", "alerts.py") == []
    assert violations("from datetime import date\nd = date(2026, 1, 1)\n", "decode.py") == []
