"""Hands-free turn taking: finds where each utterance starts and ends in a stream of mic PCM.

Silero VAD (the ONNX model faster-whisper ships, on onnxruntime, offline) scores every 32 ms window;
hysteresis (start above `threshold`, pause below `neg_threshold`) plus a minimum speech length turn
the scores into speech and pauses. At each pause, once it has lasted `turn_silence_s`, the turn model
(Smart Turn v3.2, `serve_app/turn_model.py`) hears the utterance so far: "complete" ends it there
(a speculative end: the speaker may go on, and the session then merges); "incomplete" waits until
`incomplete_silence_s`. With `turn_model: none`, a pause of `end_silence_s` ends it.

With `decide=False` (how the WebSocket session runs it) the endpointer only reports what it hears
at a pause: `Hush` with the speech so far once the pause has lasted `transcribe_silence_s` (so that
its words can be on their way before the turn model is asked), `Pause` with the turn model's verdict
at `turn_silence_s`, and `Resume` when speech comes back; the caller (`serve_app/turn_taking.py`)
decides from the sound and the words together and ends the utterance with `end()`. Only the long silence (`incomplete_silence_s`) and the length
cap still end an utterance on their own.

It runs in the ingress, next to the WebSocket: one VAD window costs about 0.06 ms of CPU and a turn
decision tens of ms once per pause, far less than sending 31 chunks a second per session through a
handle to another replica, and the barge-in decision (speech started while the avatar talks) is then
taken where the turn is cancelled.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np

from avatar_core.config import EndpointingConfig
from serve_app import turn_model

RATE = 16_000
WINDOW = 512  # samples Silero v6 scores at 16 kHz
CONTEXT = 64  # samples of the previous window it sees
HEARD_WINDOWS = -(-turn_model.WINDOW_S * RATE // WINDOW)  # windows that cover what the turn model hears


@dataclass(frozen=True)
class SpeechStart:
    """Speech has lasted min_speech_s: a barge-in if the avatar is talking."""

    at_s: float = 0.0  # stream time (audio pushed since the last reset) when this was decided


@dataclass(frozen=True)
class UtteranceEnd:
    pcm: np.ndarray  # 16 kHz mono float32, with a little pre-roll
    cut: bool = False  # True when max_utterance_s, not silence, ended it
    speculative: bool = False  # the turn model called it complete after a short pause
    p_complete: float | None = None  # the turn model's last verdict on this utterance, if asked
    at_s: float = 0.0  # stream time when this was decided


@dataclass(frozen=True)
class Hush:
    """Speech paused for `transcribe_silence_s` (decide=False): time to transcribe the speech so far,
    so that its words are ready when the pause reaches `turn_silence_s` and the turn model is asked."""

    pcm: np.ndarray  # the utterance so far
    at_s: float = 0.0


@dataclass(frozen=True)
class Pause:
    """Speech paused for `turn_silence_s`: the turn model's verdict on the utterance so far."""

    pcm: np.ndarray  # the utterance so far (as UtteranceEnd would give it now)
    p_complete: float
    at_s: float = 0.0


@dataclass(frozen=True)
class Resume:
    """Speech came back after a `Hush` (and maybe a `Pause`): the utterance goes on."""

    at_s: float = 0.0


Event = SpeechStart | Hush | Pause | Resume | UtteranceEnd


class Endpointer:
    """Feed int16 or float PCM at 16 kHz in any chunk size; get events back. One per session."""

    def __init__(self, cfg: EndpointingConfig, decide: bool = True):
        """`decide`: the turn model's "complete" ends the utterance at once (speculatively); False:
        report it as a `Pause` and let the caller decide (`end()`)."""
        from faster_whisper.vad import get_vad_model  # cached per process

        self.cfg, self.decide = cfg, decide
        self.session = get_vad_model().session
        self.turn_model = turn_model.for_config(cfg)
        self._windows = 0  # windows scored since the last reset: the stream's clock
        self._pending = np.zeros(0, np.float32)
        self._context = np.zeros(CONTEXT, np.float32)
        self._state = np.zeros((2, 1, 1, 128), np.float32)
        self._pre_roll: list[np.ndarray] = []
        self._speech: list[np.ndarray] = []
        self._voiced = 0  # windows with speech in the current utterance
        self._silent = 0  # windows of silence since speech last paused
        self._started = False  # speech_start was reported for this utterance
        self._active = False  # inside speech (hysteresis)
        self._asked = False  # the turn model has judged the current pause
        self._hushed = False  # the current pause was reported as a `Hush`
        self._asks = 0  # turn model verdicts asked for, ever
        self._p: float | None = None  # its verdict
        # The last utterance, if the model ended it, and the pause since, while that is shorter than
        # incomplete_silence_s: if speech comes back, the turn model hears it all (the session
        # merges the two when no answer was sent yet).
        self._before: list[np.ndarray] = []
        self._before_n = 0  # of which the last utterance's windows
        self._lead: list[np.ndarray] = []

    def reset(self) -> None:
        self.__init__(self.cfg, self.decide)

    @property
    def now(self) -> float:
        """Stream time: seconds of audio scored since the last reset."""
        return self._windows * WINDOW / RATE

    def push(self, chunk: np.ndarray) -> list[Event]:
        if chunk.dtype == np.int16:
            chunk = chunk.astype(np.float32) / 32768.0
        audio = np.concatenate([self._pending, chunk.astype(np.float32, copy=False)])
        n = len(audio) // WINDOW * WINDOW
        self._pending = audio[n:]
        events: list[Event] = []
        for window in audio[:n].reshape(-1, WINDOW):
            events += self._window(window)
        return events

    def _prob(self, window: np.ndarray) -> float:
        h, c = self._state
        out, h, c = self.session.run(
            None, {"input": np.concatenate([self._context, window])[None], "h": h, "c": c}
        )
        self._state = np.stack([h, c])
        self._context = window[-CONTEXT:]
        return float(np.asarray(out).reshape(-1)[0])

    def ahead(self) -> "Endpointer":
        """A copy to push audio through ahead of this one (`foresee`); this one is left as it is.
        Take it while nothing pushes this one (the copy shares no list or array that a push changes)."""
        ghost = copy.copy(self)
        for name in ("_pre_roll", "_speech", "_before", "_lead"):
            setattr(ghost, name, list(getattr(self, name)))
        return ghost

    def foresee(self, chunks: list[np.ndarray]) -> bool:
        """On a copy from `ahead()`: push `chunks`, so that the turn model's verdict on a pause in
        them is ready (`SmartTurn` keeps it) when the real push gets there. The session foresees the
        audio held while a hush's words are awaited: at the pause the decision then waits for ASR or
        Smart Turn, not for one after the other. True once the copy has asked the turn model."""
        asks = self._asks
        for chunk in chunks:
            self.push(chunk)
            if self._asks > asks:
                return True
        return False

    def end(self) -> UtteranceEnd | None:
        """End the current utterance now, at a pause (the caller's decision, `decide=False`): a
        speculative end, so if the speaker goes on the next utterance starts where this one ended
        and the turn model hears both. None when there is no paused utterance to end."""
        if not self._speech or not self._started or self._active:
            return None
        return self._close(speculative=True, cut=False)

    def _close(self, speculative: bool, cut: bool) -> UtteranceEnd | None:
        started, pcm = self._started, np.concatenate(self._speech)
        event = None
        if started:  # a short burst of noise is dropped, not sent as a turn
            speculative = speculative and not cut
            event = UtteranceEnd(pcm, cut, speculative, self._p, self.now)
            if speculative:  # if the speaker goes on, the model hears this too
                self._before, self._before_n = list(self._speech), len(self._speech)
        self._speech, self._lead, self._voiced, self._silent = [], [], 0, 0
        self._started = self._active = self._asked = self._hushed = False
        self._p = None
        return event

    def _window(self, window: np.ndarray) -> list[Event]:
        cfg, seconds = self.cfg, WINDOW / RATE
        p = self._prob(window)
        self._windows += 1
        now = self._windows * seconds
        if not self._speech:  # waiting for speech: keep a short pre-roll
            self._pre_roll.append(window)
            del self._pre_roll[: -max(1, int(cfg.pre_roll_s / seconds))]
            if self._before:
                self._before.append(window)
                if (len(self._before) - self._before_n) * seconds > cfg.incomplete_silence_s:
                    self._before = []
            if p < cfg.threshold:
                return []
            # After a speculative end the new utterance starts where that one ended, pause and all:
            # merged, the two are the recording itself, as one utterance would have been.
            start = self._before[self._before_n :] or self._pre_roll
            self._lead = self._before[: self._before_n]
            self._speech, self._pre_roll, self._before = start, [], []
            self._active, self._voiced, self._silent, self._asked, self._hushed = True, 1, 0, False, False
            return []
        self._speech.append(window)
        events: list[Event] = []
        if self._active and p < cfg.neg_threshold:
            self._active = False
        elif not self._active and p >= cfg.threshold:
            if self._hushed and not self.decide:
                events.append(Resume(now))
            self._active, self._silent, self._asked, self._hushed = True, 0, False, False
        if self._active:
            self._voiced += 1
        else:
            self._silent += 1
        if not self._started and self._voiced * seconds >= cfg.min_speech_s:
            self._started = True
            events.append(SpeechStart(now))
        total, silence = len(self._speech) * seconds, self._silent * seconds
        cut = total >= cfg.max_utterance_s
        end = speculative = False
        if (not self.decide and self.turn_model is not None and self._started and self._silent
                and not self._hushed and silence >= min(cfg.transcribe_silence_s, cfg.turn_silence_s)):
            self._hushed = True
            events.append(Hush(np.concatenate(self._speech), now))
        if self.turn_model is None:
            end = silence >= cfg.end_silence_s
        elif not self._started:  # a short burst of noise: no need to ask
            end = silence >= cfg.turn_silence_s
        elif self._silent and not self._asked and silence >= cfg.turn_silence_s:
            self._asked, self._asks = True, self._asks + 1
            heard = (self._lead + self._speech)[-HEARD_WINDOWS:]  # the model hears the last 8 s only
            self._p = self.turn_model.probability(np.concatenate(heard))
            if self.decide:
                end = speculative = self._p >= cfg.turn_threshold
            else:
                events.append(Pause(np.concatenate(self._speech), self._p, now))
        else:
            end = silence >= cfg.incomplete_silence_s
        if end or cut:
            if (event := self._close(speculative, cut)) is not None:
                events.append(event)
        return events
