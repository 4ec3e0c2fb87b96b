"""End of turn: the turn model (Smart Turn v3.2) against the plain silence timer, on real speech.

    .venv/bin/python -m benchmarks.turn_taking [--live] [--runs 3]

Offline (no Serve): each clip is pushed through the endpointer in 40 ms chunks; printed per config:
the utterance ends it reports and the endpointing delay in audio time, from the last voiced sample
(Silero VAD, unpadded) to the end of the utterance that holds it; and the model's cost per decision
(one thread, features and ONNX together).

`--live`: the graph as serve_config.yaml deploys it (tests/conftest.py's running_graph), plus a second
ingress at /before that shares its stages but ends utterances with the silence timer (0.7 s, the
shipped default before the turn model). benchmarks.voice_to_face streams each clip at real time,
turns alternating between the two ingresses, and splits voice to face into endpointing / ASR / rest.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from avatar_core.config import AppConfig, EndpointingConfig
from benchmarks.voice_to_face import JFK, clip, hands_free, summary
from capacity.stats import quantile
from serve_app.endpointing import RATE, Endpointer, UtteranceEnd

QUESTION = "What is the capital of France?"
CONFIGS = {
    "silence 0.7 s (before)": EndpointingConfig(turn_model="none"),
    "silence 1.8 s (tests before)": EndpointingConfig(turn_model="none", end_silence_s=1.8),
    "smart-turn (now)": EndpointingConfig(),
}


def speech_end_s(pcm: np.ndarray) -> float:
    """The last voiced sample (Silero VAD, unpadded, pauses from 0.2 s): with its default 2 s minimum
    silence the VAD would run JFK's last word on to the end of the clip."""
    from faster_whisper.vad import VadOptions, get_speech_timestamps

    return get_speech_timestamps(pcm, VadOptions(min_silence_duration_ms=200, speech_pad_ms=0))[-1]["end"] / RATE


def piper(text: str) -> np.ndarray:
    from avatar_core.media import resample
    from backends.piper import Piper

    async def speak():
        return [s async for s in Piper(Piper.Config()).stream(text, None, "default", "en")]

    chunks = asyncio.run(speak())
    return resample(np.concatenate([c.pcm for c in chunks]), chunks[0].sample_rate, RATE)


def offline(clips: dict[str, np.ndarray]) -> None:
    print("\nEndpointing in audio time: utterance ends, and the delay from the last voiced sample to\n"
          "the end of the utterance holding it (s)\n")
    print("| clip | config | ends (s into the clip; * speculative) | delay |")
    print("|---|---|---|---|")
    for name, pcm in clips.items():
        last = speech_end_s(pcm)
        pcm16 = (np.concatenate([pcm, np.zeros(3 * RATE, np.float32)]) * 32767).astype("<i2")
        for label, cfg in CONFIGS.items():
            ep = Endpointer(cfg)
            ends = [e for k in range(0, len(pcm16), 640) for e in ep.push(pcm16[k : k + 640])
                    if isinstance(e, UtteranceEnd)]
            marks = ", ".join(f"{e.at_s:.2f}{'*' if e.speculative else ''}" for e in ends)
            final = next(e for e in ends if e.at_s > last)
            print(f"| {name} | {label} | {marks} | {final.at_s - last:.2f} |")

    from serve_app.turn_model import SmartTurn, default_path

    model = SmartTurn.load(default_path())
    pcm = clips["jfk.flac"]
    times = []
    for k in range(40):
        end = int((2.0 + 0.2 * (k % 45)) * RATE)
        t = time.perf_counter()
        model.probability(pcm[:end])
        times.append(time.perf_counter() - t)
    print(f"\nSmart Turn per decision (features + ONNX, 1 thread, {len(times)} calls): median "
          f"{statistics.median(times) * 1e3:.1f} ms, p95 {quantile(times, 0.95) * 1e3:.1f} ms")


def live(clips: dict[str, np.ndarray], runs: int) -> None:
    from ray import serve

    from serve_app.ingress import Ingress
    from serve_app.builder import yaml_deployment_options
    from serve_app.local import running_app, wait_healthy

    storage = Path(tempfile.mkdtemp(prefix="avatar-turn-taking-"))
    cfg = AppConfig.model_validate({"llm": {"temperature": 0.0}, "storage": {"dir": str(storage)}})
    with running_app(cfg, "avatar", storage, yaml_deployment_options()) as base_url:  # as serve_config.yaml deploys it
        stages = [serve.get_deployment_handle(n, app_name="avatar") for n in ("ASR", "LLM", "TTS", "Animator")]
        before = cfg.model_copy(update={"endpointing": EndpointingConfig(turn_model="none")})
        ingress = Ingress.options(ray_actor_options={"num_cpus": 0}).bind(*stages, before)
        serve.run(ingress, name="before", route_prefix="/before", blocking=False)
        wait_healthy(f"{base_url}/before")
        ws = base_url.replace("http", "ws")
        urls = {"silence 0.7 s (before)": f"{ws}/before/ws", "smart-turn (now)": f"{ws}/ws"}
        turns: dict[tuple[str, str], list] = {}
        for name, pcm in clips.items():
            asyncio.run(hands_free(urls["smart-turn (now)"], pcm))  # warm-up, not counted
            for _ in range(runs):
                for label, url in urls.items():
                    turn = asyncio.run(hands_free(url, pcm, end_s=speech_end_s(pcm)))
                    turns.setdefault((name, label), []).append(turn)
        print(f"\nVoice to face over /ws, real-time 100 ms PCM messages as the page sends, {runs} turns each, alternating (s)\n")
        print("| clip | config | v2f p50 | v2f p95 | endpointing p50 | ASR p50 | rest p50 | utterance_end events |")
        print("|---|---|---|---|---|---|---|---|")
        for (name, label), ts in turns.items():
            s = summary(ts)
            print(f"| {name} | {label} | {s['v2f_p50_s']:.2f} | {s['v2f_p95_s']:.2f} | {s['endpointing_p50_s']:.2f} "
                  f"| {s['asr_p50_s']:.2f} | {s['rest_p50_s']:.2f} | {statistics.median(t.utterances for t in ts)} |")
        stats = __import__("httpx").get(f"{base_url}/api/v1/stats", timeout=30).json()["turns"]
        print("\n/api/v1/stats of the smart-turn ingress:", stats)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--live", action="store_true", help="also voice to face through Serve")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    print(time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), f"load average {open('/proc/loadavg').read().split()[:3]}")
    clips = {"jfk.flac": clip(JFK), f'"{QUESTION}" (Piper)': piper(QUESTION)}
    offline(clips)
    if args.live:
        live(clips, args.runs)


if __name__ == "__main__":
    main()
