"""The producer stays light: application code that imports it never loads the model library or
the Milvus client."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.support.environment import ROOT

HEAVY = ("model2vec", "pymilvus", "milvus_lite", "torch", "tokenizers", "safetensors")


def test_fresh_interpreter_importing_producer_loads_no_model_or_store_library() -> None:
    code = (
        "import json, sys\n"
        "import embedq.producer, embedq.cli, embedq.config\n"
        "from embedq.producer import EmbeddingProducer\n"
        "EmbeddingProducer().close()\n"
        f"print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert json.loads(result.stdout) == []


def test_worker_package_exposes_the_celery_app_without_loading_the_model() -> None:
    code = (
        "import json, sys\n"
        "import embedq.worker as worker\n"
        "assert worker.app.main == 'embedq.worker'\n"
        "assert 'embedq.embed_batch' in worker.app.tasks\n"
        "print(json.dumps(worker.app.worker_context.loaded))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert json.loads(result.stdout) is False


def test_the_embedding_function_needs_no_embedq_settings() -> None:
    # A notebook user of the pymilvus-compatible class has no broker: settings are never read.
    code = (
        "from embedq.worker import Model2VecEmbeddingFunction\n"
        "print(Model2VecEmbeddingFunction('bundled').dim)\n"
    )
    env = {**os.environ, "EMBEDQ_BATCH__SIZE": "-1", "EMBEDQ_REDIS__URL": "not a url"}
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "256"
