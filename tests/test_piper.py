"""The Piper backend's memory: ONNX Runtime's CPU arena kept the largest buffers any sentence had
needed, so the TTS replica grew with every new longest sentence (benchmarks/tts_memory.py measures
it). The session now follows the backend's config, with the arena off by default, and speaks the same."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

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
