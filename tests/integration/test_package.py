"""embedq installed as a user installs it: a wheel (not editable) in a fresh virtualenv, used from
an application directory that has its own ``config``, ``producer`` and ``worker`` packages (a
cookiecutter-django project has a ``config``), which must not shadow embedq's."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from embedq.stack.services import Service
from tests.support.environment import ROOT, unique
from tests.support.stack import Stack, running, wait_until

pytestmark = pytest.mark.integration

#: The application's own packages, named like embedq's.
APP_PACKAGES = {
    "config/__init__.py": "NAME = 'the application config'\n",
    "config/settings.py": "DEBUG = False\n",
    "producer/__init__.py": "NAME = 'the application producer'\n",
    "worker/__init__.py": "NAME = 'the application worker'\n",
}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """embedq's wheel, built as `pip wheel .` builds it, from a copy of this source tree (a
    build in the tree itself would leave a build/ folder whose stale files reach the next
    wheel)."""
    source = tmp_path_factory.mktemp("source") / "embedq"
    skip = shutil.ignore_patterns(
        ".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".*_cache", ".embedq"
    )
    shutil.copytree(ROOT, source, symlinks=True, ignore=skip)
    out = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(out), str(source)],
        check=True,
        capture_output=True,
    )
    (found,) = out.glob("embedq-*.whl")
    return found


def fresh_venv(where: Path) -> Path:
    """A new virtualenv; returns its python."""
    subprocess.run([sys.executable, "-m", "venv", str(where)], check=True, capture_output=True)
    return where / "bin" / "python"


def site_packages(python: Path) -> Path:
    code = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    return Path(subprocess.run([python, "-c", code], check=True, capture_output=True,
                               text=True).stdout.strip())  # fmt: skip


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A virtualenv with the wheel installed, not editable. Its third-party libraries are the
    test environment's (a path entry, whose own .pth files, among them this checkout's editable
    install, Python does not run), so the test needs no network."""
    python = fresh_venv(tmp_path_factory.mktemp("venv") / "env")
    subprocess.run(
        [python, "-m", "pip", "install", "--no-deps", "--no-index", "--quiet", str(wheel)],
        check=True,
        capture_output=True,
    )
    ours = Path(sysconfig.get_paths()["purelib"])
    (site_packages(python) / "test-libraries.pth").write_text(f"{ours}\n")
    return python


@pytest.fixture
def app_dir(tmp_path: Path) -> Path:
    app = tmp_path / "app"
    for name, text in APP_PACKAGES.items():
        (app / name).parent.mkdir(parents=True, exist_ok=True)
        (app / name).write_text(text)
    return app


def clean_env(**extra: str) -> dict[str, str]:
    """No PYTHONPATH and no EMBEDQ_* of the test run: only the installed wheel is embedq."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("EMBEDQ_") and k != "PYTHONPATH"}
    return env | {"HF_HUB_OFFLINE": "1", "EMBEDQ_METRICS__PORT": "0"} | extra


def test_the_wheel_holds_one_top_level_package(wheel: Path) -> None:
    import zipfile

    names = zipfile.ZipFile(wheel).namelist()
    tops = {name.split("/", 1)[0] for name in names if not name.split("/", 1)[0].endswith(
        (".dist-info", ".data"))}  # fmt: skip
    assert tops == {"embedq"}
    assert (
        "embedq/worker/models/minilm-l6-distilled/model.safetensors" in names
    )  # the model ships inside


def test_an_applications_own_config_producer_and_worker_do_not_shadow_embedq(
    installed: Path, app_dir: Path
) -> None:
    code = textwrap.dedent("""
        import json
        import config, producer, worker
        from embedq.producer import EmbeddingProducer
        from embedq.config.settings import load_settings
        import embedq.worker
        print(json.dumps({
            "app": [config.NAME, producer.NAME, worker.NAME],
            "embedq": EmbeddingProducer.__module__,
            "file": embedq.worker.__file__,
            "tasks": sorted(t for t in embedq.worker.app.tasks if t.startswith("embedq.")),
        }))
    """)
    # `python -c` puts the working directory first on the path, as a Django app's runner does.
    result = subprocess.run(
        [installed, "-c", code], cwd=app_dir, env=clean_env(), capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    found = json.loads(result.stdout)
    assert found["app"] == ["the application config", "the application producer",
                            "the application worker"]  # fmt: skip
    assert found["embedq"] == "embedq.producer.producer"
    assert str(site_packages(installed)) in found["file"]  # the wheel, not this checkout
    assert found["tasks"] == ["embedq.embed_batch", "embedq.search"]


def test_the_installed_command_answers_help(installed: Path, app_dir: Path) -> None:
    result = subprocess.run(
        [installed.parent / "embedq", "--help"],
        cwd=app_dir,
        env=clean_env(),
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    assert "ingest" in result.stdout and "worker" in result.stdout


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    yield from running(Stack(tmp_path))


def test_a_worker_from_the_wheel_embeds_what_the_wheels_producer_queued(
    installed: Path, app_dir: Path, stack: Stack
) -> None:
    env = clean_env(EMBEDQ_REDIS__URL=stack.redis_url, EMBEDQ_MILVUS__URI=stack.milvus_uri)
    node = unique("wheel")
    worker = Service(
        node,
        [str(installed.parent / "embedq"), "worker", "--concurrency", "1", "-n", f"{node}@%h"],
        stack.root / "wheel-worker.log",
        env=env,
        cwd=app_dir,
    )
    stack.workers.append(worker)
    wait_until(lambda: b"ready." in worker.output() or not worker.alive(), 120, "the worker")
    assert worker.alive(), worker.tail()
    collection = unique("wheel")
    code = textwrap.dedent(f"""
        from embedq.producer import EmbeddingProducer
        with EmbeddingProducer() as producer:
            producer.submit(["Owls hunt at night.", "Rivers carry sediment to the sea."],
                            ids=["owl", "river"], collection={collection!r}).wait(timeout=120)
            print(producer.search("nocturnal birds", k=1, collection={collection!r})[0].id)
    """)
    result = subprocess.run(
        [installed, "-c", code], cwd=app_dir, env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "owl"
    assert stack.count(collection) == 2


def test_a_producer_only_install_names_the_extra_a_worker_side_command_needs(
    wheel: Path, tmp_path: Path
) -> None:
    """`pip install embedq` (no extra) from the package index: the producer works, and the
    worker-side commands say which extra to install instead of printing a traceback."""
    python = fresh_venv(tmp_path / "env")
    install = subprocess.run(
        [python, "-m", "pip", "install", "--quiet", str(wheel)], capture_output=True, text=True
    )
    assert install.returncode == 0, install.stderr
    embedq = python.parent / "embedq"
    env = clean_env()
    light = subprocess.run(
        [python, "-c", "from embedq.producer import EmbeddingProducer; print('ok')"],
        env=env, capture_output=True, text=True, cwd=tmp_path,
    )  # fmt: skip
    assert light.stdout.strip() == "ok", light.stderr
    for argv, extras in (
        (["worker"], "worker"),
        (["worker", "--concurrency", "2"], "worker"),
        (["standalone"], "worker,local"),
        (["reindex", "--from", "a", "--to", "b", "--model", "bundled"], "worker"),
        (["flower"], "worker,monitor"),
    ):
        result = subprocess.run(
            [embedq, *argv], env=env, capture_output=True, text=True, cwd=tmp_path
        )
        assert result.returncode == 2, (argv, result.stderr)
        assert f"pip install 'embedq[{extras}]'" in result.stderr, result.stderr
        assert "Traceback" not in result.stderr
