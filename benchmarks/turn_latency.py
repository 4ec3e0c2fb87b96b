"""Turn latency on the embedded graph: each stage, time to first segment, total; and, from the same run,
the time to first segment of the same turn done sequentially, as the seed system did (the whole
reply first, then one sentence at a time).

    .venv/bin/python benchmarks/turn_latency.py [--runs 3]

Greedy decoding, so the pipelined and the sequential turn produce the same reply. Runs alternate
between the two orders so that machine noise falls on both alike; the table shows medians.
"""

import argparse
import asyncio
import io
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("RAY_AUTH_MODE", "disabled")

import httpx  # noqa: E402
import ray  # noqa: E402
import soundfile as sf  # noqa: E402
from ray import serve  # noqa: E402

from avatar_core.media import decode_audio  # noqa: E402
from serve_app.builder import build_app  # noqa: E402
from avatar_core.config import AppConfig  # noqa: E402
from serve_app.sentences import SentenceSplitter  # noqa: E402

PORT = 8321
JFK = ROOT.parent / "shared" / "media" / "jfk.flac"
QUESTION = "Tell me about the moon."


async def pipelined(client: httpx.AsyncClient, audio: bytes) -> dict:
    """One turn as a client sees it through the HTTP proxy."""
    start = time.perf_counter()
    first = None
    async with client.stream("POST", "/api/v1/turn", files={"audio": ("in", audio)}, timeout=300) as r:
        async for line in r.aiter_lines():
            event = json.loads(line)
            if event["type"] == "segment" and first is None:
                first = time.perf_counter() - start
            elif event["type"] == "done":
                return {**event["timings"], "client_first_segment": first, "client_total": time.perf_counter() - start}
            elif event["type"] == "error":
                raise RuntimeError(event)
    raise RuntimeError("turn ended without done")


async def sequential(handles: dict, audio: bytes) -> dict:
    """The seed's order: transcribe, generate the whole reply, then TTS + animate sentence by sentence.

    Timed like the server's own turn timings: from decoded audio, before ASR."""
    pcm = decode_audio(audio, 60)
    start = time.perf_counter()
    text = await handles["ASR"].transcribe.remote(pcm)
    reply = "".join([d async for d in handles["LLM"].options(stream=True).generate.remote([], text)])
    splitter = SentenceSplitter()
    sentences = splitter.push(reply) + splitter.flush()
    first, state = None, None
    for sentence in sentences:
        speech = await handles["TTS"].synthesize.remote(sentence)
        seg = await handles["Animator"].render_segment.remote(speech, state)
        state = seg.state
        first = first or time.perf_counter() - start
    return {"seq_first_segment": first, "seq_total": time.perf_counter() - start, "sentences": len(sentences)}


async def spoken_question(handles: dict) -> bytes:
    """A short spoken question, voiced by the embedded TTS (a synthetic voice), as a WAV file."""
    speech = await handles["TTS"].synthesize.remote(QUESTION)
    buf = io.BytesIO()
    sf.write(buf, speech.pcm, speech.sample_rate, format="WAV")
    return buf.getvalue()


def median(rows: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in rows)


async def main(runs: int) -> None:
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    serve.start(http_options={"host": "127.0.0.1", "port": PORT})
    serve.run(build_app(AppConfig.model_validate({"llm": {"temperature": 0.0}})), name="avatar", route_prefix="/")
    handles = {n: serve.get_deployment_handle(n, app_name="avatar") for n in ("ASR", "LLM", "TTS", "Animator")}
    inputs = {"jfk.flac (11 s)": JFK.read_bytes(), f"question '{QUESTION}' (Piper voice)": await spoken_question(handles)}

    results = {}
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{PORT}") as client:
        for name, audio in inputs.items():
            await pipelined(client, audio)  # one unmeasured turn per input
            rows = []
            for _ in range(runs):
                rows.append({**await pipelined(client, audio), **await sequential(handles, audio)})
            results[name] = rows

    cols = ["asr", "llm_first_token", "llm", "tts", "animator", "first_segment", "total", "seq_first_segment",
            "client_first_segment", "client_total"]
    print(f"\nTurn latency, embedded backends, {os.cpu_count()} CPUs, median of {runs} runs (seconds)\n")
    print("| input | sentences | " + " | ".join(cols) + " | sequential / pipelined first segment |")
    print("|---" * (len(cols) + 3) + "|")
    for name, rows in results.items():
        values = " | ".join(f"{median(rows, c):.3f}" for c in cols)
        ratio = statistics.median(r["seq_first_segment"] / r["first_segment"] for r in rows)
        print(f"| {name} | {rows[0]['sentences']} | {values} | {ratio:.2f}x |")
    print("\nasr..total: the server's turn timings, from decoded audio (tts, animator: summed over sentences).")
    print("seq_first_segment: the same turn in the seed system's order, timed the same way, same reply.")
    print("client_*: as an HTTP client sees it, upload, decoding and the proxy included.")
    serve.shutdown()
    ray.shutdown()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    asyncio.run(main(parser.parse_args().runs))
