"""The front end's contract with waitress: only simpleproxy/frontend/ imports it, everything it
imports is listed in frontend/contract.py, and what is listed is checked (and a rename is caught)."""

from __future__ import annotations

import ast
import re
from importlib import metadata
from pathlib import Path

import pytest
import waitress.channel

from simpleproxy.errors import WaitressMismatch
from simpleproxy.frontend import contract

PACKAGE = Path(__file__).resolve().parents[2] / "simpleproxy"
SETUP = PACKAGE.parent / "setup.py"


def _waitress_imports(path: Path) -> list[tuple[str, str]]:
    """(module, name) of every waitress import in a file; name "" for ``import waitress.x``."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "waitress":
            found += [(node.module, alias.name) for alias in node.names]
        elif isinstance(node, ast.Import):
            found += [(alias.name, "") for alias in node.names if alias.name.split(".")[0] == "waitress"]
    return found


def test_only_the_front_end_package_imports_waitress() -> None:
    importers = sorted(str(path.relative_to(PACKAGE)) for path in PACKAGE.rglob("*.py") if _waitress_imports(path))
    assert importers and all(name.startswith("frontend/") for name in importers), importers


def test_every_waitress_name_the_front_end_imports_is_in_the_contract() -> None:
    imported = {pair for path in (PACKAGE / "frontend").glob("*.py") for pair in _waitress_imports(path)}
    assert ("", "") not in imported and all(name for _, name in imported), "import waitress.x: use from-imports"
    missing = [f"{module}.{name}" for module, name in sorted(imported) if name not in contract.USED.get(module, {})]
    assert not missing, f"add to frontend/contract.py USED: {missing}"


def test_the_installed_waitress_meets_the_contract() -> None:
    assert contract.problems() == []


def test_setup_py_pins_the_tested_range_and_the_installed_release_is_in_it() -> None:
    assert f'"waitress{contract.TESTED}"' in SETUP.read_text(encoding="utf-8")
    low, high = re.fullmatch(r">=([\d.]+),<([\d.]+)", contract.TESTED).groups()
    version = tuple(int(part) for part in metadata.version("waitress").split(".")[:3])
    assert tuple(int(p) for p in low.split(".")) <= version < tuple(int(p) for p in high.split("."))


def test_a_renamed_field_a_removed_method_and_a_changed_signature_are_named(monkeypatch) -> None:
    # A field waitress sets only in __init__ is found in its code; rename it there, as a release might.
    source = contract._names_in_code(waitress.channel.HTTPChannel)
    assert "total_outbufs_len" in source and "outbufs_total_len" not in source
    monkeypatch.setitem(contract.USED["waitress.channel"], "HTTPChannel",
                        ("outbufs_total_len", "write_soon(data)", "received(data)"))
    monkeypatch.delattr(waitress.channel.HTTPChannel, "received")

    def write_soon(self, data, flush):  # type: ignore[no-untyped-def]
        return 0

    monkeypatch.setattr(waitress.channel.HTTPChannel, "write_soon", write_soon)
    assert contract.problems() == [
        "waitress.channel.HTTPChannel.outbufs_total_len is gone",
        "waitress.channel.HTTPChannel.write_soon(data, flush) where (data) is used",
        "waitress.channel.HTTPChannel.received is gone",
    ]


def test_start_up_fails_with_the_message_not_later_with_a_guard_off(monkeypatch) -> None:
    monkeypatch.setattr(contract, "_checked", False)
    monkeypatch.delattr(waitress.channel.HTTPChannel, "_flush_outbufs_below_high_watermark")
    with pytest.raises(WaitressMismatch) as failure:
        contract.check()
    message = str(failure.value)
    assert "HTTPChannel._flush_outbufs_below_high_watermark is gone" in message
    assert f"pip install 'waitress{contract.TESTED}'" in message
