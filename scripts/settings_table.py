"""Print the settings table from the settings models (`--write` updates
docs/configuration.md).

A test compares the page's table with this output, so the documented variables and defaults
cannot drift from the code.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import get_args, get_origin

from pydantic import BaseModel

from embedq.config.settings import ENV_PREFIX, Settings

ROOT = Path(__file__).resolve().parent.parent
START, END = "<!-- settings:start -->", "<!-- settings:end -->"


def _default(value: object) -> str:
    if value is None or value == []:
        return "unset"
    text = str(value)
    home = str(Path.home())
    if text.startswith(home):
        text = "~" + text[len(home) :]
    return f"`{text}`" if text != "" else '`""`'


def table() -> str:
    lines = ["| variable | default | meaning |", "| --- | --- | --- |"]
    for group, field in Settings.model_fields.items():
        model, prefix = field.annotation, f"{ENV_PREFIX}{group.upper()}__"
        if get_origin(model) is dict:
            # Named entries (EMBEDQ_MODELS__<NAME>__SOURCE, ...): one row per field.
            model, prefix = get_args(model)[1], f"{prefix}<NAME>__"
        assert isinstance(model, type)
        assert issubclass(model, BaseModel)
        instance = model()
        for name, sub in model.model_fields.items():
            variable = f"{prefix}{name.upper()}"
            default = _default(getattr(instance, name))
            meaning = (sub.description or "").replace("|", "\\|")
            lines.append(f"| `{variable}` | {default} | {meaning} |")
    return "\n".join(lines)


PAGE = ROOT / "docs" / "configuration.md"


def page_with_table(readme: str) -> str:
    head, _, rest = readme.partition(START)
    _, _, tail = rest.partition(END)
    return f"{head}{START}\n{table()}\n{END}{tail}"


if __name__ == "__main__":
    if "--write" in sys.argv:
        PAGE.write_text(page_with_table(PAGE.read_text()))
    else:
        print(table())
