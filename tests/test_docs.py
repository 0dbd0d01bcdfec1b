"""The README stays true: its settings table is the one the code defines."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from tests.conftest import ROOT


def _settings_table_module() -> object:
    spec = importlib.util.spec_from_file_location(
        "settings_table", ROOT / "scripts" / "settings_table.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_readme_settings_table_matches_the_settings_models() -> None:
    module = _settings_table_module()
    readme = (ROOT / "README.md").read_text()
    assert module.readme_with_table(readme) == readme, (  # type: ignore[attr-defined]
        "README settings table is stale: run python scripts/settings_table.py --write"
    )


def test_readme_names_the_two_commands_and_ci_runs_the_test_one() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "make demo" in readme and "make test" in readme
    assert "make test" in (ROOT / ".ci" / "run").read_text()
    assert Path(ROOT / "Makefile").read_text().count("demo:") == 1
