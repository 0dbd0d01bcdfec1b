"""`make demo`: the whole job on the embedded default stack, as a new user would run it.

Starts `embedq standalone` (Redis + Milvus Lite server + workers), ingests the sample corpus with
`embedq ingest --wait`, prints the top hits of a few queries with `embedq search`, then stops the
stack with SIGTERM, as Ctrl-C would.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / ".embedq" / "demo"
CORPUS = ROOT / "docs" / "corpus" / "sentences.jsonl"
QUERIES = [
    "What is the explosive death of a massive star called?",
    "Which Spanish rice dish is cooked in a wide shallow pan?",
    "How do vaccines teach the body to fight a disease?",
    "Who wrote the New World Symphony?",
]


def free_or_default(default: int) -> int:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", default))
            return default
        except OSError:
            sock.bind(("127.0.0.1", 0))
            return int(sock.getsockname()[1])


def embedq(*args: str, env: dict[str, str]) -> None:
    print(f"\n$ embedq {' '.join(args)}", flush=True)
    subprocess.run([sys.executable, "-m", "embedq", *args], env=env, cwd=ROOT, check=True)


def main() -> int:
    redis_port, milvus_port = free_or_default(6379), free_or_default(19530)
    env = dict(os.environ)
    env.update(
        EMBEDQ_REDIS__URL=f"redis://127.0.0.1:{redis_port}/0",
        EMBEDQ_MILVUS__URI=f"http://127.0.0.1:{milvus_port}",
        EMBEDQ_MILVUS__COLLECTION="demo",
        HF_HUB_OFFLINE="1",
    )
    DATA.mkdir(parents=True, exist_ok=True)
    log = DATA / "standalone.out"
    print(f"$ embedq standalone --data-dir {DATA}   (output in {log})", flush=True)
    with log.open("wb") as out:
        stack = subprocess.Popen(
            [sys.executable, "-m", "embedq", "standalone", "--data-dir", str(DATA)],
            env=env,
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 180
        while b"ready: queue texts" not in log.read_bytes():
            if stack.poll() is not None or time.monotonic() > deadline:
                print(log.read_text(errors="replace"), file=sys.stderr)
                return 1
            time.sleep(0.2)
        print(log.read_text().strip())
        embedq("ingest", str(CORPUS.relative_to(ROOT)), "--wait", env=env)
        for query in QUERIES:
            embedq("search", query, "-k", "3", env=env)
    finally:
        stack.send_signal(signal.SIGTERM)
        code = stack.wait(timeout=120)
        lines = log.read_text(errors="replace").splitlines()
        print("\n" + "\n".join(line for line in lines if "stopped" in line or "stopping" in line))
        print(f"stack exited with {code}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
