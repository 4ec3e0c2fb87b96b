"""Running the app on this machine, outside `serve run`: what the tests, the benchmarks and the
notebooks share to start a Ray cluster of their own and wait for the app on it. Not used by the
deployed app."""

from __future__ import annotations

import json
import os
import shutil
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

READY_DEADLINE_S = 240  # replicas load and warm their models before /healthz says ok

# A Ray started here for one process or test run: Ray 2.60 turns token auth on by default, and a
# local cluster that only this machine reaches needs none. Values already set are kept.
LOCAL_RAY_ENV = {"RAY_AUTH_MODE": "disabled"}


def local_ray_env(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for a process that starts its own Ray (`serve run --address local`): `base`
    (default: this process's) with LOCAL_RAY_ENV where it sets nothing else."""
    return {**LOCAL_RAY_ENV, **(os.environ if base is None else base)}


def use_local_ray() -> None:
    """Prepare this process to start a local Ray (`ray.init()`): LOCAL_RAY_ENV where unset. Call it
    before Ray is imported or started."""
    for key, value in LOCAL_RAY_ENV.items():
        os.environ.setdefault(key, value)


def free_port(start: int = 28_000) -> int:
    """A free port between Ray's worker ports (10002-19999) and the kernel's ephemeral range, so
    that processes Ray starts after we choose cannot take it first."""
    for port in range(start, start + 1000):
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) != 0:
                return port
    raise RuntimeError("no free port")


def wait_healthy(base_url: str, deadline_s: float = READY_DEADLINE_S) -> dict:
    """The app's /healthz answer once it says ok; TimeoutError with its last answer after `deadline_s`.
    The standard library's HTTP client: the package itself needs no client library."""
    end = time.monotonic() + deadline_s
    last = None
    while time.monotonic() < end:
        try:
            with urllib.request.urlopen(f"{base_url}/healthz", timeout=5) as r:
                return json.loads(r.read())
        except urllib.error.HTTPError as exc:  # 503 while the stages warm up
            last = exc.read().decode(errors="replace")
        except (OSError, ValueError) as exc:
            last = repr(exc)
        time.sleep(1)
    raise TimeoutError(f"the app did not become healthy in {deadline_s} s; last answer: {last}")


@contextmanager
def running_app(cfg, name: str, storage: Path, options: dict[str, dict] | None = None) -> Iterator[str]:
    """Start Ray and Serve in this process, deploy the graph of `cfg` (each deployment with its
    entry in `options`, e.g. serve_config.yaml's; one replica a stage when None), wait until every
    stage is warm and yield the base URL; then stop them all and remove the upload directory
    `storage`."""
    import ray
    from ray import serve

    from serve_app.builder import build_app, with_deployment_options

    use_local_ray()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    graph = build_app(cfg)
    serve.run(with_deployment_options(graph, options) if options else graph, name=name, route_prefix="/")
    base_url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(base_url)
        yield base_url
    finally:
        serve.shutdown()
        ray.shutdown()
        shutil.rmtree(storage, ignore_errors=True)
