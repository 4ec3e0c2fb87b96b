"""Turn-taking as a small state machine: who has the floor, and what to do when that changes.

    listening ──speech──> user speaking ──end of utterance──> thinking ──first fragment sent──> avatar speaking
        ^                     ^   │ pause: transcribe what was said so far               │
        │                     │   └ words + sound say "finished": end the utterance      │
        └──── turn done ──────┴──────────── speech: barge-in, or cancel and merge ───────┘

It is pure: the WebSocket session (`serve_app/ws_session.py`) feeds it what the endpointer heard
(`serve_app/endpointing.py` with `decide=False`: speech started, a pause begun, a pause with Smart
Turn's verdict, speech resumed, the utterance ended) and what speculative ASR heard at a pause, and
carries out the actions it returns: transcribe the speech so far, end the utterance, start a turn,
cancel a turn (with or without merging its words into the next one). Times are stream time
(seconds of audio), so the tests drive it in milliseconds without audio, models or a WebSocket.

**End of turn from sound and words together.** At every pause of `transcribe_silence_s` the session
starts ASR on the speech so far (speculatively: a turn that ends at this pause reuses the transcript,
so ASR costs the turn nothing more), and at `turn_silence_s` the endpointer asks Smart Turn; the
words are then on their way, or there. Once both are known:

- plainly unfinished words ("What is the capital of", a trailing comma or "...") keep listening,
  whatever the sound says; only the long silence (`incomplete_silence_s`) ends such an utterance;
- otherwise Smart Turn's "complete" ends it, and so does a finished sentence ("...?", "...!",
  "....") even when Smart Turn hesitates, instead of waiting for the long silence.

With `words: false` the sound alone decides (Smart Turn's verdict ends the utterance at the pause,
the transcript is still started there and reused).

**Never over a speaker mid-sentence.** Speech that starts while a turn runs cancels it. If nothing
was sent yet, or the speaker went on within `resume_s` of the end of their utterance (they had only
paused), the turn is withdrawn and its words are merged into the next utterance, which is answered
once, whole; a reply already begun is withdrawn from the history too. Later speech is a barge-in: a
new utterance, the reply cut where the user stopped listening.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass
from enum import StrEnum

import numpy as np

from avatar_core.config import EndpointingConfig


class State(StrEnum):
    LISTENING = "listening"
    USER_SPEAKING = "user_speaking"
    THINKING = "thinking"  # a turn runs; nothing of its answer has been sent
    AVATAR_SPEAKING = "avatar_speaking"  # a turn runs and has sent speech


class Words(StrEnum):
    COMPLETE = "complete"  # a sentence that has ended: "...?", "...!", "...."
    UNFINISHED = "unfinished"  # plainly goes on: a trailing function word, comma or ellipsis
    UNSURE = "unsure"


# Words after which an English sentence does not end: articles, possessive determiners, "of",
# conjunctions, arithmetic operators ("What is the capital of", "What is two plus"). Prepositions
# other than "of" and pronouns are left out: questions end on them ("Where are you from?", "Can you
# hear me?"). An auxiliary or copula that is a question's only one and its last word ("What is",
# "Which planet is", "How many legs does") still waits for its verb or subject; "How many legs does
# a spider have?" ends on a verb.
UNFINISHED_AFTER = frozenset("""
a an the my your our their its every such very whose
of and or but nor because if than although though unless whether
plus minus times divided multiplied
""".split())
QUESTION_WORDS = frozenset("what which who whom where when why how".split())
AUXILIARIES = frozenset("""
is are was were am be do does did have has had will would shall should can could may might must
""".split())

_TRAILING_UNFINISHED = (",", "...", "…", "-", "–", "—", ":", ";")


def words(text: str) -> Words:
    """What the transcript of the speech so far says about the end of the turn."""
    text = text.strip()
    tokens = re.findall(r"[a-z0-9']+", text.lower())
    if not tokens:
        return Words.UNSURE
    if text.endswith(_TRAILING_UNFINISHED) or tokens[-1] in UNFINISHED_AFTER:
        return Words.UNFINISHED
    if tokens[0] in QUESTION_WORDS and tokens[-1] in AUXILIARIES and not AUXILIARIES & set(tokens[:-1]):
        return Words.UNFINISHED  # "What is", "How many legs does": the question's verb has not come yet
    if text[-1] in ".?!":
        return Words.COMPLETE
    return Words.UNSURE


def ends_turn(p_complete: float | None, heard: str | None, cfg: EndpointingConfig) -> bool:
    """Does this pause end the turn? Smart Turn's P(complete) and, with `cfg.words`, the words
    heard so far (None: not known yet)."""
    sound = p_complete is not None and p_complete >= cfg.turn_threshold
    if not cfg.words:
        return sound
    if heard is None:
        return False  # wait for the words
    verdict = words(heard)
    if verdict is Words.UNFINISHED:
        return False
    return sound or verdict is Words.COMPLETE


# ---- actions the session carries out -------------------------------------------------------------


@dataclass(frozen=True)
class Transcribe:
    """Start ASR on the speech so far (speculatively), and report it with `heard(key, text)`."""

    key: int
    pcm: np.ndarray


@dataclass(frozen=True)
class Forget:
    """The speech went on: the transcript `key` will not be used (cancel it if still running)."""

    key: int


@dataclass(frozen=True)
class EndUtterance:
    """End the utterance now, at the pause `key` (the endpointer's `end()`)."""

    key: int


@dataclass(frozen=True)
class StartTurn:
    """Answer `pcm`. `transcript`: the key of a transcript of exactly this speech, started earlier
    (None: the turn transcribes it). `turn`: its serial, for `spoke` and `turn_ended`."""

    pcm: np.ndarray
    transcript: int | None
    speculative: bool
    turn: int


@dataclass(frozen=True)
class CancelTurn:
    """Cancel the running turn. `merged`: its words go into the next utterance; `withdraw`: it had
    sent speech, which the history forgets; `speculative`: it had started at a pause."""

    reason: str  # barge_in, new_turn
    merged: bool = False
    withdraw: bool = False
    speculative: bool = False


Action = Transcribe | Forget | EndUtterance | StartTurn | CancelTurn


class TurnTaking:
    """One per session. Feed it events; carry out the actions it returns, in order."""

    def __init__(self, cfg: EndpointingConfig):
        self.cfg = cfg
        self.state = State.LISTENING
        self.carry: np.ndarray | None = None  # words of a withdrawn turn, before the next utterance
        self.pause: int | None = None  # the key of the pause the utterance is in, if it is
        self.p: float | None = None  # Smart Turn's verdict at that pause
        self.heard_text: str | None = None  # and the words heard up to it, once known
        self._keys = itertools.count(1)
        self._turns = itertools.count(1)
        self.turn: int | None = None  # the running turn's serial
        self.turn_pcm: np.ndarray | None = None
        self.turn_speculative = False
        self.turn_ended_at: float | None = None  # stream time its utterance ended

    @property
    def running(self) -> bool:
        return self.state in (State.THINKING, State.AVATAR_SPEAKING)

    def _with_carry(self, pcm: np.ndarray) -> np.ndarray:
        return pcm if self.carry is None else np.concatenate([self.carry, pcm])

    # ---- what the endpointer heard --------------------------------------------------------------

    def speech_started(self, now: float) -> list[Action]:
        actions: list[Action] = self._forget()
        if self.running:
            spoke = self.state is State.AVATAR_SPEAKING
            went_on = (self.turn_speculative and self.turn_ended_at is not None
                       and now - self.turn_ended_at <= self.cfg.resume_s)
            merged = not spoke or went_on
            if merged:  # the speaker was not done: answer the whole utterance once
                self.carry = self.turn_pcm
            actions.append(CancelTurn("barge_in", merged=merged, withdraw=merged and spoke,
                                      speculative=self.turn_speculative))
            self._turn_over()
        self.state = State.USER_SPEAKING
        return actions

    def hushed(self, now: float, pcm: np.ndarray) -> list[Action]:
        """Speech paused for transcribe_silence_s: transcribe the speech so far, before the turn model
        is asked at this pause."""
        self.state = State.USER_SPEAKING
        actions: list[Action] = self._forget()
        key = self.pause = next(self._keys)
        actions.append(Transcribe(key, self._with_carry(pcm)))
        return actions

    def paused(self, now: float, pcm: np.ndarray, p_complete: float) -> list[Action]:
        """Speech paused for turn_silence_s; Smart Turn gave `p_complete` for the speech so far. The
        words were started at the hush of this pause (if not, they start now), and may be known."""
        actions: list[Action] = [] if self.pause is not None else self.hushed(now, pcm)
        self.p = p_complete
        if ends_turn(p_complete, self.heard_text, self.cfg):  # the sound alone (words: false), or both
            actions.append(EndUtterance(self.pause))
        return actions

    def resumed(self, now: float) -> list[Action]:
        return self._forget()

    def heard(self, key: int, text: str) -> list[Action]:
        """ASR of the speech up to pause `key` finished."""
        if key != self.pause or self.state is not State.USER_SPEAKING:
            return []  # the speaker went on, or the utterance has ended: the turn has it
        self.heard_text = text
        if self.cfg.words and self.p is not None and ends_turn(self.p, text, self.cfg):
            return [EndUtterance(key)]
        return []  # the sound is still to come (the pause is not turn_silence_s long yet), or says wait

    def utterance_ended(self, now: float, pcm: np.ndarray, speculative: bool) -> list[Action]:
        """The utterance ended: at `end()`, after the long silence, or at the length cap."""
        actions: list[Action] = []
        if self.running:  # (the speech that made this utterance has cancelled it already)
            actions.append(CancelTurn("new_turn", speculative=self.turn_speculative))
            self._turn_over()
        key, self.pause = self.pause, None  # a transcript up to the pause is one of this speech
        actions.append(self._start(self._with_carry(pcm), key, speculative, now))
        self.carry = None
        return actions

    # ---- push-to-talk, uploads and the client ----------------------------------------------------

    def utterance(self, pcm: np.ndarray, merge: bool = True) -> list[Action]:
        """A whole utterance at once (push-to-talk released, an audio file): answered now.
        `merge`: prepend the words of a withdrawn turn (push-to-talk), not for a file."""
        actions: list[Action] = self._forget()
        if self.running:
            actions.append(CancelTurn("new_turn", speculative=self.turn_speculative))
            self._turn_over()
        actions.append(self._start(self._with_carry(pcm) if merge else pcm, None, False, None))
        self.carry = None
        return actions

    def interrupt(self) -> list[Action]:
        """The user took the floor without the endpointer (push-to-talk pressed): a barge-in."""
        actions: list[Action] = self._forget()
        if self.running:
            actions.append(CancelTurn("barge_in", speculative=self.turn_speculative))
            self._turn_over()
        self.state = State.USER_SPEAKING
        return actions

    def reset(self) -> list[Action]:
        """The mic was switched, or the client cancelled: no utterance or merge carries over (a turn
        still running goes on, and ends with `turn_ended`)."""
        actions: list[Action] = self._forget()
        self.carry = None
        if not self.running:
            self.state = State.LISTENING
        return actions

    # ---- what the turn did ---------------------------------------------------------------------

    def spoke(self, turn: int) -> None:
        """Turn `turn` sent its first fragment."""
        if turn == self.turn and self.state is State.THINKING:
            self.state = State.AVATAR_SPEAKING

    def turn_ended(self, turn: int) -> None:
        """Turn `turn` ended by itself (done, or failed)."""
        if turn == self.turn:
            self._turn_over()
            if self.state in (State.THINKING, State.AVATAR_SPEAKING):
                self.state = State.LISTENING

    # ---- internals -------------------------------------------------------------------------------

    def _start(self, pcm: np.ndarray, key: int | None, speculative: bool, now: float | None) -> StartTurn:
        self.turn = next(self._turns)
        self.turn_pcm, self.turn_speculative, self.turn_ended_at = pcm, speculative, now
        self.state = State.THINKING
        return StartTurn(pcm, key, speculative, self.turn)

    def _turn_over(self) -> None:
        self.turn, self.turn_pcm, self.turn_speculative, self.turn_ended_at = None, None, False, None

    def _forget(self) -> list[Action]:
        key, self.pause, self.p, self.heard_text = self.pause, None, None, None
        return [Forget(key)] if key is not None else []
