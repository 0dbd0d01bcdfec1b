"""``embedq models``: the models these settings know, and which one is the default."""

from __future__ import annotations

import argparse
import json

from embedq.config.settings import Settings

__all__ = ["list_models"]


def list_models(settings: Settings, args: argparse.Namespace) -> int:
    catalog = settings.catalog()
    served = {model.name for model in settings.served_models()}
    if args.json:
        rows = [
            {
                "name": model.name,
                "source": model.source,
                "hub_id": model.hub_id,
                "default": model.name == settings.model.name,
                "served": model.name in served,
            }
            for model in catalog.values()
        ]
        print(json.dumps(rows))
        return 0
    width = max(len(name) for name in catalog)
    for model in catalog.values():
        where = model.hub_id or model.source
        marks = []
        if model.name == settings.model.name:
            marks.append("default")
        if model.name in served:
            marks.append("served by `embedq worker`")
        print(f"{model.name:<{width}}  {where}" + (f"  ({', '.join(marks)})" if marks else ""))
    return 0
