"""Which Whisper model should the embedded ASR use? Word error rate and time per utterance of each
named model that installs from PyPI (backends/faster_whisper.py MODELS), on the same inputs.

    .venv/bin/python -m benchmarks.asr_models [--models tiny.en base] [--repeats 3]

Inputs: the project's real speech (`assets/media/jfk.flac`: clean, with white noise at 10 and 5 dB
SNR, and in a synthetic room (0.6 s reverberation) at 15 dB SNR), and twenty spoken-style questions
synthesised by the embedded Piper voice (clean, at 10 dB SNR, and spoken 25 % faster in the room at
10 dB SNR); noise and rooms are seeded, so every run hears the same audio. Each model is the real backend class (`FasterWhisper`) with the embedded settings
(int8, 2 CPU threads, greedy, Silero VAD), so the numbers are what a turn gets. Variants: with
`initial_prompt` (a conversational prompt) and with `hotwords` (the questions' content words, which
is an oracle a deployment never has: the upper bound of what biasing can buy).

WER: word errors over all words of a set, after lower-casing, dropping punctuation and spelling out
small numbers. Time: per utterance (the median of `--repeats` calls), then the median and the
maximum over all utterances.
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from avatar_core.media import ASR_RATE, decode_audio, resample
from backends.faster_whisper import MODELS, FasterWhisper

ROOT = Path(__file__).resolve().parent.parent

JFK_TEXT = (
    "And so my fellow Americans, ask not what your country can do for you, ask what you can do for "
    "your country."
)
QUESTIONS = [
    "Could you name three animals that live in the ocean?",
    "What is the capital city of Australia?",
    "How far away is the moon from the earth?",
    "Can you tell me a short joke about computers?",
    "Why is the sky blue during the day?",
    "What should I cook for dinner tonight?",
    "Who wrote the play Romeo and Juliet?",
    "How many legs does a spider have?",
    "What is the best way to learn a new language?",
    "Could you recommend a good book about space travel?",
    "What time does the sun set in the middle of summer?",
    "Is it healthy to drink coffee every morning?",
    "Tell me something interesting about the Roman empire.",
    "What is the difference between a frog and a toad?",
    "How do bees make honey from flowers?",
    "Which planet in our solar system is the largest?",
    "Can you explain how a rainbow forms after the rain?",
    "What are some good exercises for a sore back?",
    "Where do penguins live in the wild?",
    "How long should I boil an egg for breakfast?",
]
PROMPT = "A friendly spoken conversation with a talking avatar. Questions end with a question mark."
NUMBERS = "zero one two three four five six seven eight nine ten eleven twelve".split()


def words(text: str) -> list[str]:
    text = re.sub(r"[^a-z0-9' ]+", " ", text.lower().replace("-", " "))
    return [NUMBERS[int(w)] if w.isdigit() and int(w) < len(NUMBERS) else w for w in text.split()]


def edit_distance(ref: list[str], hyp: list[str]) -> int:
    row = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        prev, row[0] = row[0], i
        for j, h in enumerate(hyp, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (r != h))
    return row[-1]


def noisy(pcm: np.ndarray, snr_db: float, seed: int) -> np.ndarray:
    noise = np.random.default_rng(seed).standard_normal(pcm.size).astype(np.float32)
    scale = np.sqrt(np.mean(pcm**2) / (np.mean(noise**2) * 10 ** (snr_db / 10)))
    return (pcm + scale * noise).astype(np.float32)


def room(pcm: np.ndarray, rt60_s: float, seed: int) -> np.ndarray:
    """A synthetic room: exponentially decaying noise as the impulse response (direct path first)."""
    n = int(rt60_s * ASR_RATE)
    tail = np.random.default_rng(seed).standard_normal(n) * np.exp(-6.9 * np.arange(n) / n)  # -60 dB at rt60
    ir = np.concatenate([[1.0], 0.3 * tail / np.sqrt(np.sum(tail**2))])
    wet = np.convolve(pcm, ir)[: pcm.size]
    return (wet * np.sqrt(np.mean(pcm**2) / np.mean(wet**2))).astype(np.float32)


def piper_questions(length_scale: float | None = None) -> list[np.ndarray]:
    """The questions in the embedded voice, 16 kHz, each with 0.3 s of silence around it."""
    from piper.config import SynthesisConfig

    from backends.piper import Piper

    tts = Piper(Piper.Config())
    pad = np.zeros(int(0.3 * ASR_RATE), np.float32)
    out = []
    for question in QUESTIONS:
        chunks = tts.voice.synthesize(question, SynthesisConfig(length_scale=length_scale))
        audio = np.concatenate([c.audio_float_array for c in chunks]).astype(np.float32)
        out.append(np.concatenate([pad, resample(audio, tts.sample_rate, ASR_RATE), pad]))
    return out


def inputs() -> dict[str, list[tuple[np.ndarray, str]]]:
    jfk = decode_audio((ROOT / "assets" / "media" / "jfk.flac").read_bytes(), 60.0)
    spoken, fast = piper_questions(), piper_questions(0.8)
    return {
        "jfk": [(jfk, JFK_TEXT)],
        "jfk 10 dB": [(noisy(jfk, 10, 1), JFK_TEXT)],
        "jfk 5 dB": [(noisy(jfk, 5, 2), JFK_TEXT)],
        "jfk room": [(noisy(room(jfk, 0.6, 3), 15, 4), JFK_TEXT)],
        "piper": list(zip(spoken, QUESTIONS)),
        "piper 10 dB": [(noisy(a, 10, 10 + i), q) for i, (a, q) in enumerate(zip(spoken, QUESTIONS))],
        "piper fast room": [(noisy(room(a, 0.6, 40 + i), 10, 70 + i), q) for i, (a, q) in enumerate(zip(fast, QUESTIONS))],
    }


def run_model(name: str, variant: str, sets: dict, repeats: int) -> dict:
    started = time.perf_counter()
    asr = FasterWhisper(FasterWhisper.Config(model=name))
    load_s = time.perf_counter() - started
    row: dict = {"model": name, "variant": variant, "load_s": load_s}
    times: list[float] = []
    samples: dict[str, str] = {}
    all_errors = all_words = 0
    for set_name, items in sets.items():
        errors = total = 0
        for pcm, ref in items:
            extra = {}
            if variant == "initial_prompt":
                extra["initial_prompt"] = PROMPT
            elif variant == "hotwords (oracle)":
                extra["hotwords"] = " ".join(w for w in words(ref) if len(w) > 3)
            took = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                text = asr._transcribe(pcm, "en", True, **extra)
                took.append(time.perf_counter() - t0)
            times.append(statistics.median(took))
            errors += edit_distance(words(ref), words(text))
            total += len(words(ref))
            if ref in (QUESTIONS[0], JFK_TEXT):
                samples.setdefault(set_name, text)
        row[set_name] = 100 * errors / total
        all_errors, all_words = all_errors + errors, all_words + total
    row["all"] = 100 * all_errors / all_words
    row["median_s"], row["max_s"] = statistics.median(times), max(times)
    row["samples"] = samples
    print(f"{name}, {variant}: WER {row['all']:.1f} %, {row['median_s']:.2f} s", file=sys.stderr, flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--variants", nargs="+", default=["plain", "initial_prompt", "hotwords (oracle)"])
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    sets = inputs()
    rows = [run_model(m, v, sets, args.repeats) for m in args.models for v in args.variants]

    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout
    print(f"\n{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, commit {commit.strip()}, "
          f"int8, cpu_threads 2, beam 1, VAD on; WER % (lower is better); time per utterance in s")
    cols = [*sets, "all"]
    print("| model | variant | " + " | ".join(f"WER {c}" for c in cols) + " | time median | time max | load |")
    print("|" + " --- |" * (len(cols) + 5))
    for r in rows:
        print(f"| {r['model']} | {r['variant']} | " + " | ".join(f"{r[c]:.1f}" for c in cols)
              + f" | {r['median_s']:.2f} | {r['max_s']:.2f} | {r['load_s']:.1f} |")
    print("\nTranscripts (jfk sets, and the first question):")
    for r in rows:
        if r["variant"] == "plain":
            for set_name, text in r["samples"].items():
                print(f"- {r['model']}, {set_name}: {text}")


if __name__ == "__main__":
    main()
