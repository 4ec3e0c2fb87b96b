"""`python -m benchmarks.sessions --quick` end to end: its own Ray cluster in a subprocess, the graph
around the toy stages, a few listening sessions and one talking. The JSON says what happened, and
it must be what the clients and the replicas really did: every session was held by the replica,
pings came back, each listening step cost the Ingress and the proxy CPU, the talking session's turn
was answered with fragments, and the costs the planner reads are derived from those rows. No
timing thresholds: speed lives in docs/benchmarks.md."""

import json
import math
import os
import subprocess
import sys

from tests.conftest import ROOT


def test_sessions_quick_measures_listening_and_talking_sessions(tmp_path):
    out = tmp_path / "sessions.json"
    subprocess.run([sys.executable, "-m", "benchmarks.sessions", "--quick", "--json", str(out)],
                   check=True, timeout=600, env={**os.environ, "PYTHONPATH": str(ROOT)}, cwd=ROOT)
    result = json.loads(out.read_text())
    rows = result["rows"]
    listening = [r for r in rows if r["kind"] == "listening"]
    talking = [r for r in rows if r["kind"] == "talking"]
    assert [r["sessions"] for r in listening] == [2, 4] and [r["sessions"] for r in talking] == [1]
    for r in rows:
        assert r["stages"] == "toy" and r["replicas"] == 1 and r["errors"] == [], r
        # the one replica's probe saw the sessions the clients held open, and its loop's lag
        assert r["sessions_per_replica"] == [r["sessions"]], r
        assert math.isfinite(r["lag_ms"]["p95"]) and r["lag_ms"]["p50"] <= r["lag_ms"]["p95"] <= r["lag_ms"]["max"]
        # every client pinged about once a second and got its pong
        assert math.isfinite(r["ping_ms"]["p95"]) and 0 < r["ping_ms"]["p50"] <= r["ping_ms"]["p95"], r
        # the front door worked: the Ingress replica and Serve's proxy both spent CPU, the machine more
        assert r["cores"]["Ingress"] > 0 and r["cores"]["proxy"] > 0, r["cores"]
        assert r["cores"]["machine"] >= r["front_door_cores"] > 0
        assert math.isclose(r["per_session"]["front_door"], r["front_door_cores"] / r["sessions"], rel_tol=1e-2)
    for r in listening:  # noise only: no turn started, nothing was sent back but pongs
        assert r["turns"] == 0 and r["fragments"] == 0 and r["v2f_s"] == {}
    (talk,) = talking
    assert talk["turns"] >= 1 and talk["fragments"] >= talk["turns"]  # jfk was answered, as fragments
    assert 0 < talk["v2f_s"]["p50"] <= talk["v2f_s"]["p95"]
    (summary,) = result["summary"]
    costs = summary["costs"]
    per_listen = costs["listen_cpu_per_s"]
    assert per_listen["ingress"] > 0 and per_listen["proxy"] > 0 and costs["listening_steps"] >= 1
    shares = sorted(r["cores"]["Ingress"] / r["sessions"] for r in listening)
    assert shares[0] - 1e-4 <= per_listen["ingress"] <= shares[-1] + 1e-4  # the median of the steps
    assert "turn_cpu_s" in costs and math.isfinite(costs["turn_cpu_s"]["ingress"])
    m = result["machine"]
    assert m["quick"] and m["chunk_ms"] == 100 and m["proxy"] == "serve" and len(m["commit"]) >= 7
