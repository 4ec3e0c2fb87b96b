"""The turn-taking state machine (serve_app/turn_taking.py) on its own: events in, actions out, in
stream time, without audio models or a WebSocket (the session that drives it over real speech:
tests/test_turn_taking.py)."""

import numpy as np
import pytest

from avatar_core.config import EndpointingConfig
from serve_app.turn_taking import (
    CancelTurn,
    EndUtterance,
    Forget,
    StartTurn,
    State,
    Transcribe,
    TurnTaking,
    Words,
    ends_turn,
    words,
)


def speech(n: int, value: float) -> np.ndarray:
    """Stand-in PCM whose samples say which stretch of speech they are."""
    return np.full(n, value, np.float32)


@pytest.mark.parametrize("text, verdict", [
    ("What is the capital of France?", Words.COMPLETE),
    ("Good morning.", Words.COMPLETE),
    ("Thank you very much!", Words.COMPLETE),
    ("What is the capital of", Words.UNFINISHED),
    ("What is the capital of?", Words.UNFINISHED),  # Whisper punctuates what it hears cut off
    ("What is 2 plus?", Words.UNFINISHED),
    ("How many legs does...", Words.UNFINISHED),
    ("And so my fellow Americans,", Words.UNFINISHED),
    ("What is", Words.UNFINISHED),
    ("Which planet is", Words.UNFINISHED),
    ("How many legs does", Words.UNFINISHED),
    # questions and answers end on prepositions, pronouns and auxiliaries too
    ("Where are you from?", Words.COMPLETE),
    ("How many legs does a spider have?", Words.COMPLETE),
    ("What can I do?", Words.COMPLETE),
    ("Can you hear me?", Words.COMPLETE),
    ("Yes, it is.", Words.COMPLETE),
    ("Thank you.", Words.COMPLETE),
    ("How many legs", Words.UNSURE),
    ("", Words.UNSURE),
    ("  ...  ", Words.UNSURE),
])
def test_words_say_finished_unfinished_or_unsure(text, verdict):
    assert words(text) is verdict


def test_a_pause_ends_the_turn_by_sound_and_words_together():
    cfg = EndpointingConfig()  # words: true, turn_threshold 0.5
    assert ends_turn(0.9, "What is the capital of France?", cfg)
    assert ends_turn(0.9, "How many legs", cfg)  # unsure words: the sound decides
    assert not ends_turn(0.9, "What is the capital of", cfg)  # plainly unfinished: keep listening
    assert not ends_turn(0.9, None, cfg)  # the words are not known yet
    assert not ends_turn(0.1, "How many legs", cfg)
    alone = EndpointingConfig(words=False)
    assert ends_turn(0.9, None, alone) and ends_turn(0.9, "What is the capital of", alone)
    assert not ends_turn(0.1, "What is the capital of France?", alone)


def test_a_finished_question_is_answered_with_the_transcript_taken_at_the_pause():
    tt = TurnTaking(EndpointingConfig())
    assert tt.speech_started(0.3) == [] and tt.state is State.USER_SPEAKING
    pcm = speech(32_000, 1.0)
    (transcribe,) = tt.paused(2.2, pcm, p_complete=0.93)  # words on: wait for them
    assert isinstance(transcribe, Transcribe) and transcribe.pcm is pcm
    assert tt.heard(transcribe.key, "What is the capital of France?") == [EndUtterance(transcribe.key)]
    (start,) = tt.utterance_ended(2.6, pcm, speculative=True)
    assert start == StartTurn(pcm, transcribe.key, True, start.turn) and tt.state is State.THINKING
    tt.spoke(start.turn)
    assert tt.state is State.AVATAR_SPEAKING
    tt.turn_ended(start.turn)
    assert tt.state is State.LISTENING and not tt.running


def test_words_started_at_the_hush_end_the_turn_when_the_sound_comes():
    """ASR starts at transcribe_silence_s; its words, known before Smart Turn is asked at
    turn_silence_s, end the turn the moment the sound agrees, with no second transcript."""
    tt = TurnTaking(EndpointingConfig())
    tt.speech_started(0.3)
    pcm = speech(32_000, 1.0)
    (transcribe,) = tt.hushed(2.1, pcm)
    assert isinstance(transcribe, Transcribe) and transcribe.pcm is pcm
    assert tt.heard(transcribe.key, "What is the capital of France?") == []  # the sound is still to come
    assert tt.paused(2.2, speech(33_600, 1.0), p_complete=0.93) == [EndUtterance(transcribe.key)]
    (start,) = tt.utterance_ended(2.2, pcm, speculative=True)
    assert start.transcript == transcribe.key


def test_the_sound_at_the_pause_still_waits_for_words_started_at_the_hush():
    tt = TurnTaking(EndpointingConfig())
    tt.speech_started(0.3)
    (transcribe,) = tt.hushed(1.5, speech(24_000, 1.0))
    assert tt.paused(1.6, speech(25_600, 1.0), p_complete=0.95) == []  # no second Transcribe, no end yet
    assert tt.heard(transcribe.key, "What is the capital of") == []  # plainly unfinished: keep listening
    assert tt.resumed(2.5) == [Forget(transcribe.key)]
    (t2,) = tt.hushed(3.2, speech(51_000, 1.0))  # the next pause: new words
    assert t2.key != transcribe.key and tt.heard(t2.key, "What is the capital of France?") == []
    assert tt.paused(3.3, speech(52_600, 1.0), p_complete=0.3) == [EndUtterance(t2.key)]  # a finished question


def test_speech_after_the_hush_forgets_its_words_and_the_sound_alone_may_decide():
    tt = TurnTaking(EndpointingConfig())
    tt.speech_started(0.3)
    (t,) = tt.hushed(1.0, speech(16_000, 1.0))
    assert tt.resumed(1.15) == [Forget(t.key)]  # a gap shorter than turn_silence_s: the ASR call is wasted
    assert tt.heard(t.key, "What is") == []
    alone = TurnTaking(EndpointingConfig(words=False))
    alone.speech_started(0.3)
    (t,) = alone.hushed(1.0, speech(16_000, 1.0))
    assert alone.paused(1.1, speech(17_600, 1.0), p_complete=0.95) == [EndUtterance(t.key)]


def test_unfinished_words_keep_listening_though_the_sound_says_finished():
    """Piper's voice falls at "What is the capital of" as at the end of a sentence."""
    tt = TurnTaking(EndpointingConfig())
    tt.speech_started(0.3)
    (first,) = tt.paused(1.6, speech(25_000, 1.0), p_complete=0.95)
    assert tt.heard(first.key, "What is the capital of") == []  # no end
    assert tt.resumed(2.4) == [Forget(first.key)]
    assert tt.heard(first.key, "What is the capital of") == []  # late words of a pause that is over
    (second,) = tt.paused(3.3, speech(40_000, 1.0), p_complete=0.4)
    assert second.key != first.key
    assert tt.heard(second.key, "What is the capital of France?") == [EndUtterance(second.key)]
    assert tt.state is State.USER_SPEAKING  # until the endpointer has ended the utterance


def test_unsure_words_and_a_hesitant_sound_wait_for_the_long_silence():
    tt = TurnTaking(EndpointingConfig())
    tt.speech_started(0.3)
    pcm = speech(20_000, 1.0)
    (t,) = tt.paused(1.4, pcm, p_complete=0.1)
    assert tt.heard(t.key, "How many legs") == []
    # the endpointer ends it after incomplete_silence_s: the transcript taken at the pause is reused
    (start,) = tt.utterance_ended(3.2, pcm, speculative=False)
    assert start.transcript == t.key and start.speculative is False


def test_the_sound_alone_decides_without_words():
    tt = TurnTaking(EndpointingConfig(words=False))
    tt.speech_started(0.3)
    transcribe, end = tt.paused(1.6, speech(25_000, 1.0), p_complete=0.95)
    assert isinstance(transcribe, Transcribe) and end == EndUtterance(transcribe.key)  # ASR started too
    assert tt.heard(transcribe.key, "What is the capital of") == []
    tt.resumed(2.0)
    (only,) = tt.paused(3.0, speech(40_000, 1.0), p_complete=0.2)
    assert isinstance(only, Transcribe)


def test_speech_before_any_answer_merges_and_no_word_is_lost():
    """The turn started at a pause is cancelled when the speaker goes on, and the next utterance
    (from the end of the first: the endpointer keeps the pause) is answered with the first one's
    audio in front; the transcript at the next pause covers both."""
    tt = TurnTaking(EndpointingConfig())
    tt.speech_started(0.3)
    first = speech(40_000, 1.0)
    (t,) = tt.paused(2.7, first, 0.95)
    tt.heard(t.key, "And so my fellow Americans.")
    (start,) = tt.utterance_ended(2.9, first, speculative=True)
    (cancel,) = tt.speech_started(3.8)
    assert cancel == CancelTurn("barge_in", merged=True, withdraw=False, speculative=True)
    assert tt.state is State.USER_SPEAKING and not tt.running
    second = speech(120_000, 2.0)
    (t2,) = tt.paused(11.0, second, 0.97)
    np.testing.assert_array_equal(t2.pcm, np.concatenate([first, second]))
    tt.heard(t2.key, "And so my fellow Americans, ask not what your country can do for you.")
    (start2,) = tt.utterance_ended(11.2, second, speculative=True)
    np.testing.assert_array_equal(start2.pcm, np.concatenate([first, second]))
    assert start2.transcript == t2.key and start2.turn != start.turn
    assert tt.carry is None  # merged once


def test_a_reply_begun_while_the_speaker_only_paused_is_withdrawn():
    cfg = EndpointingConfig(resume_s=1.5)
    tt = TurnTaking(cfg)
    tt.speech_started(0.3)
    first = speech(16_000, 1.0)
    (t,) = tt.paused(1.2, first, 0.9)
    tt.heard(t.key, "My name is Sam.")
    (start,) = tt.utterance_ended(1.6, first, speculative=True)
    tt.spoke(start.turn)
    (cancel,) = tt.speech_started(1.6 + cfg.resume_s - 0.1)  # went on within resume_s
    assert cancel == CancelTurn("barge_in", merged=True, withdraw=True, speculative=True)
    (t2,) = tt.paused(4.0, speech(16_000, 2.0), 0.9)
    assert len(t2.pcm) == 32_000  # the withdrawn turn's words come first


def test_speech_after_the_avatar_began_is_a_barge_in_not_a_merge():
    tt = TurnTaking(EndpointingConfig(resume_s=1.5))
    tt.speech_started(0.3)
    pcm = speech(16_000, 1.0)
    (t,) = tt.paused(1.2, pcm, 0.9)
    tt.heard(t.key, "What is two plus two?")
    (start,) = tt.utterance_ended(1.6, pcm, speculative=True)
    tt.spoke(start.turn)
    (cancel,) = tt.speech_started(3.5)  # 1.9 s after the end: a new utterance
    assert cancel == CancelTurn("barge_in", merged=False, withdraw=False, speculative=True)
    assert tt.carry is None
    (t2,) = tt.paused(5.0, speech(8_000, 2.0), 0.9)
    assert len(t2.pcm) == 8_000


def test_a_turn_ended_by_the_long_silence_is_never_merged_once_it_spoke():
    tt = TurnTaking(EndpointingConfig(resume_s=1.5))
    tt.speech_started(0.3)
    (start,) = tt.utterance_ended(3.0, speech(16_000, 1.0), speculative=False)
    tt.spoke(start.turn)
    (cancel,) = tt.speech_started(3.3)
    assert cancel.merged is False and cancel.reason == "barge_in"


def test_the_end_of_a_cancelled_turn_changes_nothing():
    tt = TurnTaking(EndpointingConfig())
    tt.speech_started(0.3)
    (start,) = tt.utterance_ended(2.0, speech(16_000, 1.0), speculative=True)
    tt.speech_started(2.5)  # cancels it (merged)
    tt.turn_ended(start.turn)  # its task finishing late
    assert tt.state is State.USER_SPEAKING
    tt.spoke(start.turn)
    assert tt.state is State.USER_SPEAKING


def test_push_to_talk_and_files():
    tt = TurnTaking(EndpointingConfig())
    tt.speech_started(0.3)
    first = speech(16_000, 1.0)
    tt.utterance_ended(2.0, first, speculative=True)
    (cancel,) = tt.interrupt()  # push-to-talk pressed: a barge-in, nothing merged
    assert cancel == CancelTurn("barge_in", speculative=True) and tt.carry is None
    (start,) = tt.utterance(speech(8_000, 2.0))
    assert start.transcript is None and start.speculative is False and len(start.pcm) == 8_000
    # speech before it answers merges; an uploaded file then is answered alone, as it is
    (cancel,) = tt.speech_started(5.0)
    assert cancel.merged and len(tt.carry) == 8_000
    (start,) = tt.utterance(speech(4_000, 3.0), merge=False)
    assert len(start.pcm) == 4_000 and tt.carry is None
    # the mic switched off and on: no utterance or merge carries over; a running turn goes on
    (cancel,) = tt.speech_started(6.0)
    assert cancel.merged and tt.carry is not None
    assert tt.reset() == [] and tt.state is State.LISTENING and tt.carry is None and not tt.running
    (start,) = tt.utterance(speech(4_000, 4.0))
    tt.reset()
    assert tt.running and tt.state is State.THINKING
    tt.turn_ended(start.turn)
    assert tt.state is State.LISTENING


def test_a_transcript_is_reused_only_for_the_speech_it_heard():
    tt = TurnTaking(EndpointingConfig())
    tt.speech_started(0.3)
    (t,) = tt.paused(1.0, speech(10_000, 1.0), 0.2)
    tt.heard(t.key, "I would like")
    assert tt.resumed(1.5) == [Forget(t.key)]
    # the utterance then ends at the length cap, not at a pause: the turn transcribes it itself
    (start,) = tt.utterance_ended(30.0, speech(480_000, 1.0), speculative=False)
    assert start.transcript is None
