"""The avatar graph's turn, as `serve_app/turn.py` streams it: the user speaks a clip, endpointing
waits, ASR runs, the LLM writes sentences, TTS speaks each in turn as audio chunks, the animator
renders what it has in pieces (the turn's first 0.4 s, then about 1 s, taking all that has piled
up) and the client plays fragments back to back; then the user thinks and speaks again. Also the
turns the turn model starts early at a pause and cancels (`EarlyStart`), and what people say
(`Workload`, `Clip`)."""

from __future__ import annotations

import random
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING

from avatar_core.playback import hold_s, need, play
from capacity.engine import EPS, Job

if TYPE_CHECKING:
    from capacity.engine import Deployment
    from capacity.sim import Sim


@dataclass
class Clip:
    """One thing a user says and the reply it gets, where they were measured per input (the turn
    model waits longer after an unfinished-sounding phrase; a greedy LLM gives each question its
    own reply); None: the workload's figure."""

    speech_s: float  # until the last voiced sample
    endpointing_s: float | None = None
    reply_s: float | None = None
    sentences: int | None = None
    first_sentence_s: float | None = None
    # (start, cancel), seconds into the clip, of each turn started early at a pause the turn model
    # called the end and cancelled when the speaker went on: its ASR and LLM calls run until then
    early: tuple[tuple[float, float], ...] = ()
    # what the graph adds to the first segment beyond its stage calls' own time, one turn at a time
    # (Serve's hops, its processes' work): a wait between ASR and the LLM
    graph_s: float = 0.0


@dataclass
class Workload:
    """How people talk to it, per turn: a range (lo, hi) is drawn uniformly, a list picked from."""

    utterance_s: float | tuple[float, float] | list[float] = 4.0  # the user's speech
    clips: list[Clip] | None = None  # picked from instead of the figures they give
    in_order: bool = False  # session i speaks clips i, i + 1, ... (run.py's protocol) instead of at random
    gap_s: float = 0.0  # the client's time from one turn's last fragment to the next turn's audio
    think_s: float = 3.0  # mean pause after the reply ends (or after `done`), exponential; 0: none
    sentences: int | tuple[int, int] = 3
    reply_s: float | tuple[float, float] = 8.0  # seconds of the avatar's speech in a reply
    first_sentence_s: float | None = None  # the first sentence's speech (None: an equal share)
    tokens_per_speech_s: float = 3.3  # tokens the LLM writes per second of speech
    first_sentence_tokens: float | None = None  # overrides the rate for the first sentence
    wait_for_playback: bool = True  # the user speaks again only after the avatar has finished
    turns: int | None = None  # per session (None: until the run ends)


@dataclass
class TurnConfig:
    endpointing_s: float = 0.72  # end_silence_s + half a 32 ms VAD window
    # ASR of the speech so far starts this long after the last voiced sample (the hush:
    # endpointing.transcribe_silence_s), and the end of the turn waits for the endpointer's decision
    # (endpointing_s) and those words, whichever comes last; None: ASR starts at the end of the turn
    transcribe_at_s: float | None = None
    hop_s: float = 0.003  # a handle round trip per stage call
    first_fragment_s: float = 0.4
    fragment_s: float = 1.0
    fragment_growth: float | None = None  # each fragment at most this many times the one before (animator.fragment_growth)
    max_turns: int | None = None  # the ingress's admission.max_turns
    # the client starts a reply's speech this long after its first fragment arrived (0: at once, as
    # the page does); None: an adaptive jitter buffer, the largest need of the session's last five
    # turns, at most 1 s (avatar_core/playback.py). Voice to face counts to the first frame shown.
    hold_s: float | None = 0.0


def draw(rng: random.Random, v):
    """A tuple (lo, hi) is a uniform range, a list a set of values to pick from, else a constant."""
    if isinstance(v, list):
        return rng.choice(v)
    if isinstance(v, tuple):
        lo, hi = v
        return rng.randint(lo, hi) if isinstance(lo, int) and isinstance(hi, int) else rng.uniform(lo, hi)
    return v


def next_size(last_s: float | None, cfg: TurnConfig) -> float:
    """The next fragment's length after one of `last_s` (None: the turn's first)."""
    if last_s is None:
        return cfg.first_fragment_s
    if cfg.fragment_growth is None:
        return cfg.fragment_s
    return min(cfg.fragment_s, cfg.fragment_growth * max(cfg.first_fragment_s, last_s))  # a short tail: from the first's


def fragments(piece_s: float, last_s: float | None, cfg: TurnConfig) -> list[float]:
    """The lengths a piece is cut into: the turn's first fragment short, later ones growing to
    about `fragment_s`."""
    out, left = [], piece_s
    while left > EPS:
        size = next_size(last_s, cfg)
        take = left if left < size * 1.5 else size
        out.append(take)
        left -= take
        last_s = take
    return out


class Turn:
    def __init__(self, sim: "Sim", session: "Session", clip: Clip):
        self.sim, self.session, self.cfg = sim, session, sim.turn_cfg
        self.speech_end = sim.loop.now
        self.clip, self.u, self.graph_s = clip, clip.speech_s, clip.graph_s
        rng, w = sim.rng, sim.workload
        n = max(1, int(clip.sentences or draw(rng, w.sentences)))
        total = clip.reply_s or draw(rng, w.reply_s)
        first_s = clip.first_sentence_s or w.first_sentence_s
        first = min(first_s, total) if first_s and n > 1 else total / n
        self.speech = [first] + [(total - first) / (n - 1)] * (n - 1) if n > 1 else [total]
        rate = w.tokens_per_speech_s
        self.tokens = [w.first_sentence_tokens or first * rate] + [s * rate for s in self.speech[1:]]
        self.tts_queue: deque[int] = deque()
        self.tts_busy = False
        self.avail = [0.0] * n  # audio of each sentence TTS has produced
        self.tts_done = [False] * n
        self.anim_k, self.anim_used, self.anim_busy = 0, 0.0, False
        self.arrivals: list[float] = []
        self.durations: list[float] = []
        self.asr_done: float | None = None
        self.words_at: float | None = None  # when the hush's words came (transcribe_at_s)
        self.decided = False  # the endpointer has decided; the words are awaited
        self.utterance_end: float | None = None
        self.finished = False
        ep = self.cfg.endpointing_s if clip.endpointing_s is None else clip.endpointing_s
        if self.cfg.transcribe_at_s is not None:
            sim.loop.after(min(self.cfg.transcribe_at_s, ep), self.transcribe_at_hush)
        sim.loop.after(ep, self.heard)

    # stages
    def transcribe_at_hush(self) -> None:
        cost = self.sim.deps["asr"].cost
        work = cost.fixed_s + cost.per_audio_s * self.u
        self.sim.loop.after(self.cfg.hop_s, self.sim.deps["asr"].submit, Job(self.sim, [(work, self.words)]))

    def words(self) -> None:
        self.sim.loop.after(self.cfg.hop_s, self._words_in)  # back in the ingress

    def _words_in(self) -> None:
        self.words_at = self.sim.loop.now
        if self.decided:
            self.heard()

    def heard(self) -> None:
        """The end of the turn: the endpointer's decision, and the hush's words where ASR started there."""
        sim = self.sim
        if self.cfg.transcribe_at_s is not None and self.words_at is None:
            self.decided = True
            return
        self.utterance_end = sim.loop.now
        if self.cfg.max_turns is not None and sim.active_turns >= self.cfg.max_turns:
            sim.rejected += 1
            self.session.turn_over(self, None)
            return
        sim.active_turns += 1
        if self.words_at is not None:  # the transcript is the hush's
            self.transcribed()
            return
        cost = sim.deps["asr"].cost
        work = cost.fixed_s + cost.per_audio_s * self.u
        sim.loop.after(self.cfg.hop_s, sim.deps["asr"].submit, Job(sim, [(work, self.transcribed)]))

    def transcribed(self) -> None:
        self.asr_done = self.sim.loop.now
        llm = self.sim.deps["llm"]
        c = llm.cost
        single = c.tokens_at(1) if c.tokens_per_s else 1.0
        marks, cum = [], 0.0
        for k, toks in enumerate(self.tokens):
            cum += toks
            marks.append((c.ttft_s + c.fixed_s + cum / single, lambda k=k: self.sentence(k)))
        self.sim.loop.after(self.cfg.hop_s + self.graph_s, llm.submit, Job(self.sim, marks))

    def sentence(self, k: int) -> None:
        self.tts_queue.append(k)
        self.speak()

    def speak(self) -> None:
        if self.tts_busy or not self.tts_queue:
            return
        k = self.tts_queue.popleft()
        self.tts_busy = True
        c = self.sim.deps["tts"].cost
        s = self.speech[k]
        step = c.chunk_s or s
        marks, a = [], 0.0
        while a < s - EPS:
            a = min(s, a + step)
            marks.append((c.fixed_s + c.per_audio_s * a, lambda k=k, a=a: self.audio(k, a)))
        self.sim.loop.after(self.cfg.hop_s, self.sim.deps["tts"].submit, Job(self.sim, marks))

    def audio(self, k: int, a: float) -> None:
        self.avail[k] = a
        if a >= self.speech[k] - EPS:
            self.tts_done[k] = True
            self.tts_busy = False
            self.speak()
        self.animate()

    def animate(self) -> None:
        """Turn.animate: wait for a fragment's worth (or the sentence's end), take all there is."""
        if self.anim_busy or self.anim_k >= len(self.speech):
            return
        k = self.anim_k
        have = self.avail[k] - self.anim_used
        last_s = self.durations[-1] if self.durations else None
        need = next_size(last_s, self.cfg)
        if have < need - EPS and not (self.tts_done[k] and have > EPS):
            return
        self.anim_busy = True
        c = self.sim.deps["animator"].cost
        marks, cum = [], 0.0
        for length in fragments(have, last_s, self.cfg):
            cum += length
            marks.append((c.fixed_s + c.per_audio_s * cum, lambda length=length: self.fragment(length)))
        piece = have
        end = marks[-1][1]
        marks[-1] = (marks[-1][0], lambda: (end(), self.rendered(piece)))
        self.sim.loop.after(self.cfg.hop_s, self.sim.deps["animator"].submit, Job(self.sim, marks))

    def fragment(self, length: float) -> None:
        self.arrivals.append(self.sim.loop.now + self.cfg.hop_s)
        self.durations.append(length)

    def rendered(self, piece: float) -> None:
        self.anim_busy = False
        self.anim_used += piece
        k = self.anim_k
        if self.tts_done[k] and self.anim_used >= self.speech[k] - EPS:
            self.anim_k, self.anim_used = k + 1, 0.0
            if self.anim_k == len(self.speech):
                self.finished = True
                self.sim.active_turns -= 1
                self.sim.loop.after(self.cfg.hop_s, self.session.turn_over, self, self.playback())
                return
        self.animate()

    def playback(self) -> dict:
        """Client-side: play from the first arrival (plus the jitter buffer, `TurnConfig.hold_s`),
        each fragment when it has come and the one before has ended; an underrun is a fragment that
        came after the one before had ended."""
        hold = self.cfg.hold_s if self.cfg.hold_s is not None else hold_s(self.session.needs)
        start, underruns, end = play(self.arrivals, self.durations, hold)
        self.session.needs.append(need(self.arrivals, self.durations))
        return {
            "speech_end": self.speech_end,
            "clip": self.clip,
            "v2f_s": start - self.speech_end,
            "endpointing_s": self.utterance_end - self.speech_end,
            "asr_s": self.asr_done - self.utterance_end,
            "underruns": underruns,
            "fragments": len(self.arrivals),
            "playback_end": end,
            "done": self.arrivals[-1],
        }


class EarlyStart:
    """A turn started at a pause and cancelled when the speaker went on: its ASR call, then its LLM
    call, hold their replicas and cores until the cancel."""

    def __init__(self, sim: "Sim", heard_s: float, cancel_s: float):
        self.sim, self.u = sim, heard_s
        self.job: Job | None = None
        self.dep: Deployment | None = None
        self.cancelled = False
        sim.loop.after(0.0, self.submit, "asr")
        sim.loop.after(cancel_s - heard_s, self.cancel)

    def submit(self, stage: str) -> None:
        if self.cancelled:
            return
        self.dep = self.sim.deps[stage]
        c = self.dep.cost
        if stage == "asr":
            self.job = Job(self.sim, [(c.fixed_s + c.per_audio_s * self.u, lambda: self.submit("llm"))])
        else:  # the reply it would have written: the cancel ends it first
            self.job = Job(self.sim, [(c.ttft_s + c.fixed_s + 1e6, None)])
        self.dep.submit(self.job)

    def cancel(self) -> None:
        self.cancelled = True
        if self.dep is not None:
            self.dep.cancel(self.job)


class Session:
    def __init__(self, sim: "Sim", start: float, turns: int | None, index: int = 0):
        self.sim = sim
        self.turns_left = turns
        self.next_clip = index
        self.needs: list[float] = []  # each turn's playback need, for the page's jitter buffer
        sim.loop.at(start, self.speak)

    def speak(self) -> None:
        sim, w = self.sim, self.sim.workload
        if w.clips and w.in_order:
            clip = w.clips[self.next_clip % len(w.clips)]
            self.next_clip += 1
        else:
            clip = sim.rng.choice(w.clips) if w.clips else Clip(draw(sim.rng, w.utterance_s))
        if "overhead" in sim.deps:  # from the first word, beside the stages, not in the turn's path
            sim.deps["overhead"].submit(Job(sim, [(sim.deps["overhead"].cost.fixed_s, None)]))
        for start, cancel in clip.early:
            sim.loop.after(start, EarlyStart, sim, start, cancel)
        sim.loop.after(clip.speech_s, lambda: Turn(sim, self, clip))

    def turn_over(self, turn: Turn, result: dict | None) -> None:
        sim, w = self.sim, self.sim.workload
        if result is not None:
            sim.results.append(result)
        if self.turns_left is not None:
            self.turns_left -= 1
            if self.turns_left <= 0:
                sim.sessions_done += 1
                return
        think = sim.rng.expovariate(1 / w.think_s) if w.think_s > 0 else 0.0
        resume = result["playback_end"] if (result and w.wait_for_playback) else sim.loop.now
        sim.loop.at(max(resume, sim.loop.now) + think + w.gap_s, self.speak)
