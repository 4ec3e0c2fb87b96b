"""serve_app/vad.py: a message's VAD windows in one ONNX call give the same probabilities and the
same endpointing events as one call per window, and the endpointer runs on the event loop only
where it cannot reach the turn model. On real speech (jfk.flac) and noise; no Ray."""

from __future__ import annotations

import numpy as np
import pytest

from avatar_core.config import EndpointingConfig
from avatar_core.media import decode_audio
from serve_app.endpointing import RATE, WINDOW, Endpointer
from serve_app.vad import BatchedEndpointer, may_ask_turn_model, score_windows
from tests.conftest import JFK


@pytest.fixture(scope="module")
def jfk16() -> np.ndarray:
    pcm = decode_audio(JFK.read_bytes(), 60)
    tail = np.zeros(3 * RATE, np.float32)  # silence after the speech, so the utterance ends
    return (np.clip(np.concatenate([pcm, tail]), -1, 1) * 32767).astype("<i2")


def noise16(seconds: float, rms: float = 0.003, seed: int = 0) -> np.ndarray:
    return (np.random.default_rng(seed).normal(0, rms, int(seconds * RATE)) * 32767).astype("<i2")


def chunks(pcm: np.ndarray, n: int):
    for a in range(0, len(pcm), n):
        yield pcm[a : a + n]


def describe(events) -> list[tuple]:
    """What a session acts on: each event's kind, when, and for an utterance its length and flags."""
    out = []
    for e in events:
        pcm = getattr(e, "pcm", None)
        out.append((type(e).__name__, round(e.at_s, 3), None if pcm is None else len(pcm),
                    getattr(e, "speculative", None), getattr(e, "cut", None)))
    return out


def test_one_call_per_message_scores_each_window_as_one_call_per_window(jfk16):
    """Speech and silence, cut into messages of several sizes: the probabilities agree with the
    endpointer's own window-by-window scoring to float precision."""
    one = Endpointer(EndpointingConfig(turn_model="none"))
    audio = jfk16.astype(np.float32) / 32768.0
    windows = audio[: len(audio) // WINDOW * WINDOW].reshape(-1, WINDOW)
    singly = np.array([one._prob(w) for w in windows])
    assert singly.max() > 0.9 and singly.min() < 0.1  # speech and silence both there
    for per_call in (1, 3, 7):
        context, state = np.zeros(64, np.float32), np.zeros((2, 1, 1, 128), np.float32)
        got = []
        for a in range(0, len(windows), per_call):
            probs, context, state = score_windows(one.session, windows[a : a + per_call], context, state)
            assert len(probs) == len(windows[a : a + per_call])
            got += probs.tolist()
        np.testing.assert_allclose(got, singly, atol=1e-5)


@pytest.mark.parametrize("turn_model", ["none", "smart-turn"])
@pytest.mark.parametrize("message", [640, 1600, 5000])
def test_the_batched_endpointer_ends_the_same_utterances(jfk16, turn_model, message):
    cfg = EndpointingConfig(turn_model=turn_model)
    plain, batched = Endpointer(cfg), BatchedEndpointer(cfg)
    want, got = [], []
    for chunk in chunks(jfk16, message):
        want += plain.push(chunk)
        got += batched.push(chunk)
    assert describe(got) == describe(want)
    kinds = [k for k, *_ in describe(want)]
    assert "SpeechStart" in kinds and "UtteranceEnd" in kinds  # jfk was heard and ended
    for a, b in zip(want, got):
        if hasattr(a, "pcm"):
            assert np.array_equal(a.pcm, b.pcm)


class CountingModel:
    def __init__(self, model):
        self.model, self.calls = model, 0

    def probability(self, pcm):
        self.calls += 1
        return self.model.probability(pcm)


@pytest.mark.parametrize("message", [640, 1600])
def test_a_push_that_asks_the_turn_model_is_always_one_predicted_to(jfk16, message):
    """Noise, jfk, noise: the pushes that reached the turn model were all predicted to (they go to
    a thread); while only noise comes in, none is (they run on the loop)."""
    ep = BatchedEndpointer(EndpointingConfig())
    ep.turn_model = CountingModel(ep.turn_model)
    lead = noise16(3)
    stream = np.concatenate([lead, jfk16, noise16(3, seed=1)])
    asked, mays = 0, []
    for chunk in chunks(stream, message):
        may = may_ask_turn_model(ep, len(chunk))
        before = ep.turn_model.calls
        ep.push(chunk)
        if ep.turn_model.calls > before:
            asked += 1
            assert may, "the turn model was asked in a push predicted not to ask it"
        mays.append(may)
    assert asked >= 2  # jfk's pauses and its end
    assert not any(mays[: len(lead) // message])  # the noise before he speaks: all on the loop
    assert not any(mays[-RATE * 2 // message :])  # and the last 2 s, after his utterance ended


def test_listening_to_noise_never_needs_the_thread():
    ep = BatchedEndpointer(EndpointingConfig())
    for chunk in chunks(noise16(10), 1600):
        assert not may_ask_turn_model(ep, len(chunk))
        assert ep.push(chunk) == []


def test_without_a_turn_model_no_push_needs_the_thread(jfk16):
    ep = Endpointer(EndpointingConfig(turn_model="none"))
    assert not any(may_ask_turn_model(ep, len(c)) or ep.push(c) and False for c in chunks(jfk16, 640))


def test_a_long_message_may_reach_the_model_even_between_utterances():
    ep = Endpointer(EndpointingConfig())
    cfg = ep.cfg
    assert may_ask_turn_model(ep, int(RATE * (cfg.min_speech_s + cfg.turn_silence_s)) + WINDOW)
    assert not may_ask_turn_model(ep, 640)
