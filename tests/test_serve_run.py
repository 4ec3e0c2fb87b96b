"""What a new user does: `serve run serve_config.yaml`, then one turn over HTTP with real speech.

`serve run` gets a Ray cluster of its own (`--address local`, its own temp dir) and a free port, so
this test runs before or after the session's cluster exists, in any order.
"""

import subprocess
import sys
from pathlib import Path

from serve_app.local import local_ray_env
from tests.conftest import JFK_WORDS, ROOT, free_port, shipped_config_on, stop_serve_run, wait_healthy
from tests.test_stages import words
from tests.test_turn import post_turn


def test_serve_run_holds_a_turn(jfk_bytes, tmp_path, ray_tmpdir):
    port = free_port(29_000)
    config_path, _ = shipped_config_on(port, tmp_path)
    serve = Path(sys.executable).with_name("serve")
    log = (tmp_path / "serve.log").open("w")
    env = {**local_ray_env(), "RAY_TMPDIR": ray_tmpdir}
    env.pop("RAY_ADDRESS", None)
    proc = subprocess.Popen(
        [str(serve), "run", "--address", "local", str(config_path)], cwd=ROOT, env=env, stdout=log,
        stderr=subprocess.STDOUT, start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        health = wait_healthy(base)
        assert set(health["stages"]) == {"asr", "llm", "tts", "animator"}
        events, _ = post_turn(base, jfk_bytes)
        assert JFK_WORDS in words(events[1]["text"])
        assert any(e["type"] == "segment" for e in events) and events[-1]["type"] == "done"
    finally:
        stop_serve_run(proc)
    log.close()
    assert Path(ray_tmpdir, "ray").is_dir(), "serve run's Ray used its own temp dir"
