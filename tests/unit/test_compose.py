"""docker-compose.yml, checked statically (no Docker engine here): it parses, images are pinned,
every EMBEDQ_ variable exists in the settings, and the worker runs the documented command."""

from __future__ import annotations

import re
from typing import Any

import yaml

from tests.support.environment import ROOT


def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return data


def test_services_are_there() -> None:
    assert {"redis", "etcd", "minio", "milvus", "worker", "flower"} <= set(compose()["services"])


def test_images_are_pinned() -> None:
    for name, service in compose()["services"].items():
        image = service.get("image")
        if image is None:
            assert "build" in service, name
            continue
        tag = image.rsplit(":", 1)[-1] if ":" in image else ""
        assert tag and tag != "latest", f"{name}: {image} is not pinned"


def test_every_embedq_variable_is_a_setting() -> None:
    page = (ROOT / "docs" / "configuration.md").read_text()
    documented = set(re.findall(r"`(EMBEDQ_[A-Z_]+)`", page))
    for name, service in compose()["services"].items():
        for variable in service.get("environment") or {}:
            if variable.startswith("EMBEDQ_"):
                assert variable in documented, f"{name}: {variable} is not a setting"


def test_worker_runs_the_documented_command_and_redis_keeps_its_queue() -> None:
    services = compose()["services"]
    assert services["worker"]["command"] == ["embedq", "worker"]
    assert "`embedq worker" in (ROOT / "README.md").read_text()
    redis_command = services["redis"]["command"]
    assert "--appendonly yes" in redis_command
    assert "--maxmemory-policy noeviction" in redis_command
    for name in ("etcd", "minio", "milvus", "redis"):
        assert "healthcheck" in services[name], name
