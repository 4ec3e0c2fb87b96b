"""Turn-taking with the end-of-turn model (Smart Turn v3.2) on real speech: pauses inside a sentence
do not end the utterance, a finished question ends after a short silence, and a turn started early
at a pause the model took for the end is cancelled and merged when the speaker goes on.

Positions are in audio time (the stream's clock, `at_s`), never wall-clock."""

import asyncio
import json

import httpx
import numpy as np
import pytest
import websockets

from avatar_core.config import EndpointingConfig
from avatar_core.media import resample
from serve_app.endpointing import RATE, Endpointer, Hush, Pause, Resume, SpeechStart, UtteranceEnd
from tests.conftest import stage_stats
from tests.test_hands_free import CHUNK, Client, jfk_pcm16
from tests.test_stages import words

JFK_SENTENCE = "and so my fellow americans ask not what your country can do for you ask what you can do for your country"


def endpoint(cfg: EndpointingConfig, pcm16: np.ndarray) -> list[SpeechStart | UtteranceEnd]:
    ep = Endpointer(cfg)
    return [e for k in range(0, len(pcm16), CHUNK) for e in ep.push(pcm16[k : k + CHUNK])]


def ends(events) -> list[UtteranceEnd]:
    return [e for e in events if isinstance(e, UtteranceEnd)]


def speech_spans(pcm16: np.ndarray) -> list[tuple[float, float]]:
    """Where Silero VAD hears speech, split at every pause of 0.2 s or more, unpadded."""
    from faster_whisper.vad import VadOptions, get_speech_timestamps

    opts = VadOptions(min_silence_duration_ms=200, speech_pad_ms=0)
    return [(s["start"] / RATE, s["end"] / RATE) for s in get_speech_timestamps(pcm16.astype(np.float32) / 32768, opts)]


def piper_pcm16(text: str, silence_s: float) -> np.ndarray:
    """`text` spoken by the embedded Piper voice, at 16 kHz, then silence."""
    pytest.importorskip("piper")
    from backends.piper import Piper

    async def speak():
        return [s async for s in Piper(Piper.Config()).stream(text, None, "default", "en")]

    chunks = asyncio.run(speak())
    pcm = resample(np.concatenate([c.pcm for c in chunks]), chunks[0].sample_rate, RATE)
    return (np.concatenate([pcm, np.zeros(int(silence_s * RATE), np.float32)]) * 32767).astype("<i2")


def test_pauses_inside_a_sentence_do_not_end_it():
    """JFK pauses three times: after "And so my fellow Americans," (a phrase that can end a turn:
    the model says so, a speculative end the session merges, see below), after "ask not" and after
    "can do for you," (mid-sentence: the model says incomplete). The plain silence timer with the
    same short silence cuts the sentence at each of them."""
    pcm = jfk_pcm16(3.0)
    spans = speech_spans(pcm)
    pauses = [(a_end, b_start) for (_, a_end), (b_start, _) in zip(spans, spans[1:]) if b_start - a_end > 0.4]
    assert len(pauses) == 3, spans  # 2.3 s, 4.4 s and 7.6 s into the clip, 0.6-1.1 s long
    last_voiced = spans[-1][1]
    cfg = EndpointingConfig()
    got = ends(endpoint(cfg, pcm))

    assert len(got) == 2, [(e.at_s, e.p_complete) for e in got]
    first, final = got
    assert first.speculative and first.p_complete >= cfg.turn_threshold
    assert pauses[0][0] < first.at_s < pauses[0][1]  # in the pause after "Americans"
    # the rest, from "ask not" to "your country", is one utterance, ended after the last word
    assert final.speculative and 0 < final.at_s - last_voiced < 0.6
    # the second starts where the first ended: merged, they are the recording itself
    stop = round(final.at_s * RATE)
    merged = np.concatenate([first.pcm, final.pcm])
    np.testing.assert_array_equal(merged, pcm[stop - len(merged) : stop].astype(np.float32) / 32768)
    assert 2.0 < len(first.pcm) / RATE < 3.0 and len(merged) / RATE > 10.0
    for start, stop in pauses[1:]:
        assert not any(start < e.at_s < stop for e in got)

    timer = ends(endpoint(EndpointingConfig(turn_model="none", end_silence_s=cfg.turn_silence_s), pcm))
    assert len(timer) >= 4, [e.at_s for e in timer]
    for start, stop in pauses:  # every pause ends an utterance
        assert any(start < e.at_s < stop for e in timer), (start, stop, [e.at_s for e in timer])
    assert not any(e.speculative or e.p_complete is not None for e in timer)


def test_plain_silence_timer_needs_a_long_silence_for_one_utterance():
    """What the turn model replaces: one utterance from JFK takes a silence longer than his pauses."""
    pcm = jfk_pcm16(2.0)
    events = endpoint(EndpointingConfig(turn_model="none", end_silence_s=1.3), pcm)
    assert [type(e) for e in events] == [SpeechStart, UtteranceEnd]
    assert 10.0 < len(events[1].pcm) / RATE < 12.5  # the whole 11 s speech, not its pauses
    assert len(ends(endpoint(EndpointingConfig(turn_model="none"), pcm))) == 3  # 0.7 s: three
    assert Endpointer(EndpointingConfig()).push(np.zeros(RATE, np.int16)) == []  # silence: nothing


def test_a_finished_question_ends_after_the_short_silence():
    cfg = EndpointingConfig()
    question = piper_pcm16("What is the capital of France?", 3.0)
    last_voiced = speech_spans(question)[-1][1]
    (end,) = ends(endpoint(cfg, question))
    assert end.speculative and end.p_complete >= cfg.turn_threshold
    # ended after turn_silence_s of VAD silence: Silero's score falls a little after the last sample
    assert cfg.turn_silence_s <= end.at_s - last_voiced < cfg.turn_silence_s + 0.25, end.at_s - last_voiced
    (timer,) = ends(endpoint(EndpointingConfig(turn_model="none"), question))
    assert timer.at_s - end.at_s > 0.4  # the default silence timer (0.7 s) ends it later



def test_a_speculative_turn_is_cancelled_and_merged_when_the_speaker_goes_on(serve_app, handles):
    """Over a real WebSocket session (sent faster than real time: the session holds the audio while
    a pause's words are awaited, so it decides as in real time): the turn started at "Americans,"
    (Smart Turn and tiny.en's "And so my fellow Americans." both say finished) is cancelled when
    JFK goes on, nothing of it reaches the history, the whole sentence is answered once, and the
    stats count each early start cancelled. A pause later in the sentence may end it early too,
    depending on how ASR punctuates what it heard; that turn is merged the same way."""
    pcm = jfk_pcm16(3.0)
    names = ("ASR", "LLM", "TTS", "Animator")

    async def talk():
        async with websockets.connect(serve_app.replace("http", "ws") + "/ws", max_size=None) as ws:
            c = Client(ws)
            session = (await c.until("session"))["session_id"]
            await ws.send(json.dumps({"type": "mic", "on": True}))
            await c.stream(pcm)  # faster than real time
            await c.until("done")
            return session, c.events

    stats = lambda: httpx.get(f"{serve_app}/api/v1/stats", timeout=30).json()["turns"]  # noqa: E731
    before, stages_before = stats(), {n: stage_stats(n) for n in names}
    session, events = asyncio.run(talk())
    after, stages_after = stats(), {n: stage_stats(n) for n in names}

    kinds = [e["type"] for e in events]
    utterances = [e for e in events if e["type"] == "utterance_end"]
    assert 2 <= len(utterances) <= 3 and all(u["speculative"] for u in utterances), utterances
    assert 2.0 < utterances[0]["duration_s"] < 3.0  # "And so my fellow Americans,"
    assert 9.5 < utterances[-1]["duration_s"] < 11.5  # merged: the whole sentence
    cancels = [e for e in events if e["type"] == "cancelled"]
    assert cancels == [{"type": "cancelled", "reason": "barge_in", "merged": True}] * (len(utterances) - 1)
    last_cancel = len(kinds) - 1 - kinds[::-1].index("cancelled")
    assert "segment" not in kinds[:last_cancel]  # nothing of an early answer was sent
    (transcript,) = [e for e in events[last_cancel:] if e["type"] == "transcript"]
    assert JFK_SENTENCE in words(transcript["text"])
    assert kinds.count("done") == 1

    delta = {k: after[k] - before[k] for k in after}
    early = len(utterances) - 1
    assert delta["speculative_started"] == early + 1 and delta["speculative_cancelled"] == early, delta
    assert delta["completed"] == 1 and delta["cancelled"] == early and delta["failed"] == 0, delta
    # the early turns' stage work was cancelled or finished; one reply was written to the end
    for n in names:
        d = {k: stages_after[n][k] - stages_before[n][k] for k in ("started", "completed", "cancelled", "failed")}
        assert d["started"] == d["completed"] + d["cancelled"] and d["failed"] == 0, (n, d)
    assert stages_after["LLM"]["completed"] - stages_before["LLM"]["completed"] == 1
    # ASR: once at each pause of 0.2 s (the turns reuse those transcripts), never more
    assert 2 <= stages_after["ASR"]["started"] - stages_before["ASR"]["started"] <= 6
    messages = httpx.get(f"{serve_app}/api/v1/sessions/{session}", timeout=30).json()["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant"]
    assert JFK_SENTENCE in words(messages[0]["content"])


def test_a_missing_turn_model_is_named_with_the_way_to_get_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="fetch_smart_turn.sh.*turn_model: none"):
        Endpointer(EndpointingConfig(turn_model_path=tmp_path / "absent.onnx"))


def test_the_endpointer_reports_pauses_and_leaves_the_end_to_the_caller():
    """decide=False (how the session runs it): every pause of turn_silence_s comes with Smart Turn's
    verdict and the speech so far, `Resume` when JFK goes on, and nothing ends his sentence but the
    caller's `end()` (or the long silence); an utterance the caller ended at a pause is continued,
    pause and all, by the next one, so merged they are the recording itself."""
    cfg = EndpointingConfig()
    pcm = jfk_pcm16(1.0)
    ep = Endpointer(cfg, decide=False)
    events = [e for k in range(0, len(pcm), CHUNK) for e in ep.push(pcm[k : k + CHUNK])]
    pauses = [e for e in events if isinstance(e, Pause)]
    hushes = [e for e in events if isinstance(e, Hush)]
    assert [type(e) for e in events if not isinstance(e, Pause | Hush)][:1] == [SpeechStart]
    assert not ends(events)  # 1 s of silence after the last word: less than incomplete_silence_s
    # every pause was a hush first (transcribe_silence_s), with the same speech up to it; a hush the
    # speech came back after is followed by Resume, whether or not it became a pause
    assert len(pauses) >= 4 and sum(isinstance(e, Resume) for e in events) == len(hushes) - 1
    last, pairs = None, []
    for e in events:
        if isinstance(e, Hush | Resume):
            last = e
        elif isinstance(e, Pause):
            assert isinstance(last, Hush)  # no Resume between them
            pairs.append((last, e))
    assert len(pairs) == len(pauses)
    for hush, pause in pairs:
        assert 0.09 < pause.at_s - hush.at_s < 0.11  # turn_silence_s 0.2 - transcribe_silence_s 0.1
        np.testing.assert_array_equal(pause.pcm[: len(hush.pcm)], hush.pcm)
    first, last = pauses[0], pauses[-1]
    assert first.p_complete >= cfg.turn_threshold and last.p_complete >= cfg.turn_threshold  # "Americans," / the end
    assert all(p.p_complete < cfg.turn_threshold for p in pauses[1:-1])  # mid-sentence
    assert 2.0 < len(first.pcm) / RATE < 3.0 and len(last.pcm) / RATE > 10.0

    # the caller ends the utterance at the first pause; JFK goes on; the next utterance continues it
    ep = Endpointer(cfg, decide=False)
    got, stop = [], None
    for k in range(0, len(pcm), CHUNK):
        for e in ep.push(pcm[k : k + CHUNK]):
            got.append(e)
            if isinstance(e, Pause) and stop is None:
                stop = ep.end()
                assert stop is not None and stop.speculative and ep.end() is None  # once
                got.append(stop)
    final = ep.end()  # at the last pause, with the caller's decision
    speech = [e for e in got if isinstance(e, SpeechStart)]
    assert len(speech) == 2 and final is not None and final.speculative
    merged = np.concatenate([stop.pcm, final.pcm])
    at = round(final.at_s * RATE)
    np.testing.assert_array_equal(merged, pcm[at - len(merged) : at].astype(np.float32) / 32768)


def test_a_pause_foreseen_ahead_is_judged_once_and_the_endpointer_hears_the_same(monkeypatch):
    """While a hush's words are awaited the session pushes the held PCM through a copy of the
    endpointer (`ahead`, `foresee`): Smart Turn judges the pause there, the real push then finds the
    same verdict without judging again, and the real endpointer's events are those it would have
    heard without the copy."""
    from serve_app import turn_model

    cfg = EndpointingConfig()
    pcm = jfk_pcm16(1.0)
    chunks = [pcm[k : k + CHUNK] for k in range(0, len(pcm), CHUNK)]
    plain = Endpointer(cfg, decide=False)
    expected = [e for c in chunks for e in plain.push(c)]

    model = turn_model.for_config(cfg)
    judged = []
    judge = model._judge
    monkeypatch.setattr(model, "_judge", lambda audio: judged.append(len(audio)) or judge(audio))
    model._verdicts.clear()
    ep = Endpointer(cfg, decide=False)
    got, k = [], 0
    while not any(isinstance(e, Hush) for e in got):
        got += ep.push(chunks[k])
        k += 1
    assert ep.ahead().foresee(chunks[k : k + 10])  # the copy reached the pause and asked
    assert len(judged) == 1
    for c in chunks[k:]:
        got += ep.push(c)
    assert [(type(e), e.at_s) for e in got] == [(type(e), e.at_s) for e in expected]
    pauses = [(e.p_complete, x.p_complete) for e, x in zip(got, expected) if isinstance(e, Pause)]
    assert pauses and all(a == b for a, b in pauses)
    assert len(judged) == len(pauses)  # the foreseen pause was not judged twice
