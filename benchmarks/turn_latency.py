"""Time to first segment with and without streaming inside a sentence, measured in one run, and
playback underruns over a long reply.

    .venv/bin/python benchmarks/turn_latency.py [--runs 3]

Two copies of the embedded graph share one Ray cluster: `streamed` cuts each sentence into fragments
(the turn's first 0.4 s, then about 1 s), `whole` sends each sentence as one segment, as before the
seam issue. Turns alternate between them so machine noise falls on both alike; greedy decoding, so
both produce the same reply. Times come from the client (HTTP NDJSON through Serve's proxy, from the
upload to the event's arrival) and from the server's own turn timings. An underrun is a fragment that
arrives after the one before it has finished playing, playback starting at the first arrival.
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

from avatar_core.config import AppConfig  # noqa: E402
from serve_app.builder import build_app  # noqa: E402

PORT = 8321
JFK = ROOT / "assets" / "media" / "jfk.flac"
QUESTION = "Could you describe, in one long and detailed sentence, what the ocean looks like at sunset?"
STORY = "Tell me a long story about a brave little dragon who learns to fly."


def config(first_s: float, rest_s: float, max_tokens: int = 120) -> AppConfig:
    return AppConfig.model_validate({
        "llm": {"temperature": 0.0, "max_tokens": max_tokens},
        "animator": {"first_fragment_s": first_s, "fragment_s": rest_s},
    })


async def turn(client: httpx.AsyncClient, prefix: str, audio: bytes) -> dict:
    """One turn as a client sees it: when each segment event arrived, and the server's timings."""
    start = time.perf_counter()
    arrivals, durations, sentences = [], [], []
    async with client.stream("POST", f"{prefix}/api/v1/turn", files={"audio": ("in", audio)}, timeout=600) as r:
        async for line in r.aiter_lines():
            event = json.loads(line)
            if event["type"] == "segment":
                arrivals.append(time.perf_counter() - start)
                durations.append(event["duration_s"])
                sentences.append(event["text"])
            elif event["type"] == "done":
                return {**event["timings"], "client_first_segment": arrivals[0], "arrivals": arrivals,
                        "durations": durations, "first_sentence": sentences[0]}
            elif event["type"] == "error":
                raise RuntimeError(event)
    raise RuntimeError("turn ended without done")


def underruns(arrivals: list[float], durations: list[float]) -> int:
    """Fragments that arrived after the previous one finished playing (real-time playback from the
    first arrival, each fragment starting when it has arrived and the one before has ended)."""
    count, end = 0, arrivals[0]
    for arrived, duration in zip(arrivals, durations):
        if arrived > end:  # never true for the first
            count, end = count + 1, arrived
        end += duration
    return count


async def spoken(handle, text: str) -> bytes:
    speech = await handle.synthesize.remote(text)
    buf = io.BytesIO()
    sf.write(buf, speech.pcm, speech.sample_rate, format="WAV")
    return buf.getvalue()


async def main(runs: int) -> None:
    # Three graphs of 0.9 CPU each, declared on 2 cores: turns never overlap, so none competes.
    ray.init(num_cpus=3, include_dashboard=False, log_to_driver=False)
    serve.start(http_options={"host": "127.0.0.1", "port": PORT})
    apps = {"streamed": config(0.4, 1.0), "whole": config(30.0, 30.0), "story": config(0.4, 1.0, 400)}
    for name, cfg in apps.items():
        serve.run(build_app(cfg), name=name, route_prefix=f"/{name}")
    tts = serve.get_deployment_handle("TTS", app_name="streamed")
    inputs = {"jfk.flac (11 s)": JFK.read_bytes(), "long-answer question (Piper voice)": await spoken(tts, QUESTION)}

    rows: dict[str, dict[str, list[dict]]] = {}
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{PORT}") as client:
        for label, audio in inputs.items():
            for name in ("streamed", "whole"):
                await turn(client, f"/{name}", audio)  # one unmeasured turn each
            rows[label] = {"streamed": [], "whole": []}
            for _ in range(runs):
                for name in ("streamed", "whole"):
                    rows[label][name].append(await turn(client, f"/{name}", audio))
        story = [await turn(client, "/story", await spoken(tts, STORY)) for _ in range(max(1, runs // 2))]

    med = lambda xs, k: statistics.median(x[k] for x in xs)  # noqa: E731
    print(f"\nTime to first segment, embedded backends, {os.cpu_count()} CPUs, median of {runs} runs (s)\n")
    print("| input | first sentence (words) | whole sentences: first segment | streamed: first segment "
          "| streamed / whole | server first_segment whole → streamed |")
    print("|---|---|---|---|---|---|")
    for label, by in rows.items():
        words = len(by["streamed"][0]["first_sentence"].split())
        whole, streamed = med(by["whole"], "client_first_segment"), med(by["streamed"], "client_first_segment")
        ratio = statistics.median(s["client_first_segment"] / w["client_first_segment"]
                                  for s, w in zip(by["streamed"], by["whole"]))
        print(f"| {label} | {words} | {whole:.2f} | {streamed:.2f} | {ratio:.2f} | "
              f"{med(by['whole'], 'first_segment'):.2f} → {med(by['streamed'], 'first_segment'):.2f} |")
    print("\nUnderruns over a long reply (streamed, max_tokens 400):\n")
    print("| run | fragments | speech (s) | underruns |")
    print("|---|---|---|---|")
    for i, t in enumerate(story):
        print(f"| {i + 1} | {len(t['arrivals'])} | {sum(t['durations']):.1f} | {underruns(t['arrivals'], t['durations'])} |")
    serve.shutdown()
    ray.shutdown()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    asyncio.run(main(parser.parse_args().runs))
