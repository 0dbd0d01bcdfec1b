"""The docs stay true: the settings table is the code's; the README names the two commands."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from tests.support.environment import ROOT


def _settings_table_module() -> object:
    spec = importlib.util.spec_from_file_location(
        "settings_table", ROOT / "scripts" / "settings_table.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_settings_table_matches_the_settings_models() -> None:
    module = _settings_table_module()
    page = (ROOT / "docs" / "configuration.md").read_text()
    assert module.page_with_table(page) == page, (  # type: ignore[attr-defined]
        "docs/configuration.md settings table is stale: run python scripts/settings_table.py "
        "--write"
    )


def test_readme_names_the_two_commands_and_ci_runs_the_test_one() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "make demo" in readme and "make test" in readme
    assert "make test" in (ROOT / ".ci" / "run").read_text()
    assert Path(ROOT / "Makefile").read_text().count("demo:") == 1
