"""Run a real Milvus standalone server from the PyPI `milvus` package, for tests.

The package's own `milvus-server` command is a wrapper that restarts its child and, when the
requested port is briefly unbindable (TIME_WAIT after a kill), silently moves to the next one.
For fault tests we need the same address on every restart, so this script prepares the data
directory and configuration once with the package's helpers, then `exec`s the genuine
`milvus run standalone` binary: a signal sent to this process reaches Milvus itself.

Usage: python tests/support/milvus_server.py DATA_DIR PROXY_PORT [--auth]
(--auth turns on Milvus's user authentication; the first user is root / Milvus.)
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path


def prepare(data: Path, proxy_port: int, auth: bool = False) -> dict[str, str]:
    """Unpack the binaries and write the config on first use; return the environment."""
    env_file = data / "embedq-env.json"
    if env_file.is_file():
        saved: dict[str, str] = json.loads(env_file.read_text())
        return saved
    import milvus

    server = milvus.MilvusServer(wait_for_started=False)
    server.set_base_dir(str(data))
    server.config.set("proxy_port", proxy_port)
    # The root coordinator's default port (53100) lies in Linux's range of ephemeral ports,
    # where any client connection of the test run may hold it by the time Milvus binds it
    # (Milvus then aborted: "bind: address already in use"). Every other port is below it.
    root_coord_port, sock = server.config.resolve_port(23100)
    sock.close()
    server.config.set("root_coord_port", root_coord_port)
    server.config.resolve()
    if server.config.get("proxy_port") != proxy_port:
        raise SystemExit(f"port {proxy_port} is taken; pick another")
    milvus._initialize_data_files(str(data))
    # Milvus waits up to 30 minutes for a graceful stop by default; a test waits 30 s.
    config = data / "configs" / "milvus.yaml"
    text = config.read_text()
    text = text.replace("gracefulStopTimeout: 1800", "gracefulStopTimeout: 30")
    if auth:
        text = text.replace("authorizationEnabled: false", "authorizationEnabled: true")
    config.write_text(text)
    metrics_port, sock = server.config.resolve_port(9091)
    sock.close()
    binary_dir = str(data / "bin")
    env = {
        "DEPLOY_MODE": "STANDALONE",
        "METRICS_PORT": str(metrics_port),
        "MILVUS_RUN_DIR": str(data / "run"),
        "LD_LIBRARY_PATH": binary_dir + ":" + os.environ.get("LD_LIBRARY_PATH", ""),
    }
    env_file.write_text(json.dumps(env))
    return env


def main() -> None:
    data, proxy_port = Path(sys.argv[1]).resolve(), int(sys.argv[2])
    data.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ) | prepare(data, proxy_port, auth="--auth" in sys.argv[3:])
    os.chdir(data)
    binary = str(data / "bin" / "milvus")
    os.execve(binary, [binary, "run", "standalone"], env)  # noqa: S606 - fixed argv


if __name__ == "__main__":
    main()
