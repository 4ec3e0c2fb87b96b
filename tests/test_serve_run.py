"""What a new user does: `serve run serve_config.yaml`, then one turn over HTTP with real speech.

Runs before every other test (conftest.py orders it first), so that `serve run` starts its own Ray
instance rather than finding ours.
"""

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import ray

from tests.conftest import JFK_WORDS, ROOT, wait_healthy
from tests.test_stages import words
from tests.test_turn import post_turn

PORT = 8000  # serve_config.yaml's port


def test_serve_run_holds_a_turn(jfk_bytes, tmp_path):
    assert not ray.is_initialized(), "must run before the session cluster starts in this process"
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", PORT)) != 0, f"port {PORT} is taken: stop the running app first"
    serve = Path(sys.executable).with_name("serve")
    log = (tmp_path / "serve.log").open("w")
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    proc = subprocess.Popen(
        [str(serve), "run", "serve_config.yaml"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        health = wait_healthy(f"http://127.0.0.1:{PORT}")
        assert set(health["stages"]) == {"asr", "llm", "tts", "animator"}
        events, _ = post_turn(f"http://127.0.0.1:{PORT}", jfk_bytes)
        assert JFK_WORDS in words(events[1]["text"])
        assert any(e["type"] == "segment" for e in events) and events[-1]["type"] == "done"
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # serve run ignores SIGINT when not interactive
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
