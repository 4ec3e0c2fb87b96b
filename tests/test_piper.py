"""The Piper backend's memory: ONNX Runtime's CPU arena kept the largest buffers any sentence had
needed, so the TTS replica grew with every new longest sentence (benchmarks/tts_memory.py). The
session now follows the backend's config, with the arena off by default, and speaks the same."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from tests.conftest import ROOT

pytest.importorskip("piper")

from backends.piper import Piper  # noqa: E402

TEXT = "Ask not what your country can do for you. Ask what you can do for your country."


def speak(tts: Piper, text: str) -> np.ndarray:
    async def run() -> list[np.ndarray]:
        return [speech.pcm async for speech in tts.stream(text, None, "default", "en")]

    return np.concatenate(asyncio.run(run()))


def test_the_onnx_session_follows_the_config_with_the_arena_off_by_default():
    default = Piper(Piper.Config()).voice.session.get_session_options()
    assert (default.enable_cpu_mem_arena, default.enable_mem_pattern) == (False, False)
    arena = Piper(Piper.Config(cpu_mem_arena=True, mem_pattern=True)).voice.session.get_session_options()
    assert (arena.enable_cpu_mem_arena, arena.enable_mem_pattern) == (True, True)


def test_without_the_arena_the_speech_is_the_same():
    ours = speak(Piper(Piper.Config()), TEXT)
    arena = speak(Piper(Piper.Config(cpu_mem_arena=True, mem_pattern=True)), TEXT)
    assert ours.size > 22_050 * 3  # two sentences of speech, not silence
    assert ours.shape == arena.shape
    np.testing.assert_allclose(ours, arena, atol=1e-4)


MEASURE = textwrap.dedent(
    """
    import asyncio, json, random, sys
    from pathlib import Path
    from backends.piper import Piper

    def rss():
        return next(int(l.split()[1]) for l in Path("/proc/self/status").read_text().splitlines()
                    if l.startswith("VmRSS:")) / 1024

    async def main():
        tts = Piper(Piper.Config(**json.loads(sys.argv[1])))
        rng, words, seen = random.Random(3), "the moon is bright and every star listens".split(), []
        for i in range(24):  # ever longer sentences: each needs larger buffers than the one before
            text = " ".join(rng.choice(words) for _ in range(4 + 2 * i)).capitalize() + "."
            async for _ in tts.stream(text, None, "default", "en"):
                pass
            seen.append(rss())
        print(json.dumps(seen))

    asyncio.run(main())
    """
)


def rss_over_longer_sentences(**config) -> list[float]:
    out = subprocess.run([sys.executable, "-c", MEASURE, json.dumps(config)], cwd=ROOT, check=True,
                         capture_output=True, text=True, timeout=300).stdout
    return json.loads(out.splitlines()[-1])


def test_memory_does_not_follow_the_longest_sentence():
    """In a fresh process, 24 sentences each longer than the last (4 to 50 words): with the arena on,
    every one leaves its buffers behind; with the default config, memory stays near its first level."""
    ours = rss_over_longer_sentences()
    arena = rss_over_longer_sentences(cpu_mem_arena=True, mem_pattern=True)
    ours_growth, arena_growth = ours[-1] - ours[3], arena[-1] - arena[3]
    assert arena_growth > 100, f"the arena should grow with the sentences: {arena}"
    assert ours_growth < arena_growth / 3, f"default config grew {ours_growth:.0f} MB vs {arena_growth:.0f} MB: {ours}"
