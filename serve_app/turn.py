"""One conversation turn: the user's speech in; transcript, streamed reply and ordered fragments out.

    speech ─ASR─> text ─LLM─> deltas ─splitter─> sentences ─TTS─> audio chunks ─Animator─> fragments

Think, speak and animate run as one task group joined by queues: the LLM writes while TTS speaks the
sentence before, and the animator turns each sentence's audio into fragments as the chunks arrive,
the turn's first fragment short because it gates the first frame. Fragments leave strictly in order.
Closing the event stream (client gone, barge-in) cancels the group and the stage requests it waits
on; the turn ends with one outcome.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from ray.serve.handle import DeploymentHandle

from avatar_core.config import AppConfig
from avatar_core.media import fragment_bounds
from avatar_core.types import ClientError, Speech
from serve_app import metrics, playback
from serve_app.conversation import Conversation
from serve_app.errors import error
from serve_app.events import Done, ReplyDelta, Segment, Transcript, TurnEvent, TurnStarted
from serve_app.metrics import TurnCounts
from serve_app.sentences import SentenceSplitter

log = logging.getLogger("ray.serve")
_END = object()


@dataclass(frozen=True)
class Stages:
    asr: DeploymentHandle
    llm: DeploymentHandle
    tts: DeploymentHandle
    animator: DeploymentHandle
    # An LLM backend whose stage is not ours (Ray's vLLM server) brings a client for its deployment's
    # protocol: `chat_client(handle, cfg)` gives a function of the messages.
    llm_client: Callable[[list[dict]], Any] | None = None

    @classmethod
    def of(cls, asr, llm, tts, animator, cfg: AppConfig) -> "Stages":
        return cls(asr, llm, tts, animator, cfg.backend("llm").chat_client(llm, cfg.llm))

    def chat(self, messages: list[dict]) -> Any:
        """The reply's text deltas, streamed: an async iterator with `cancel()` (our LLM stage's
        `chat`, or the backend's own client)."""
        if self.llm_client is not None:
            return self.llm_client(messages)
        return self.llm.options(stream=True).chat.remote(messages)

    def face(self, conversation_id: str) -> DeploymentHandle:
        """The animator, routed to the replica that last served this conversation when it can take
        the request (Serve's model multiplexing as session affinity): a backend that keeps a
        stream open per conversation (Ditto) continues it there."""
        return self.animator.options(multiplexed_model_id=conversation_id)


class StageError(Exception):
    def __init__(self, stage: str, code: str, message: str):
        super().__init__(message)
        self.stage, self.code, self.message = stage, code, message


class Timings:
    """Per-stage seconds for one turn, logged (with `extra` fields for Serve's JSON log encoding) and
    recorded in the stage histogram the moment each is known. `spans` keeps when each piece of work
    ran (seconds from the turn's start), so a timeline can show how the stages overlap."""

    def __init__(self, turn_id: str):
        self.turn_id = turn_id
        self.start = time.perf_counter()
        self.values: dict[str, float] = {}
        self.spans: list[dict] = []

    def span(self, stage: str, started: float, **labels) -> None:
        """Work of `stage` from `started` (a perf_counter reading) until now."""
        start, end = round(started - self.start, 4), round(self.elapsed(), 4)
        self.spans.append({"stage": stage, "start": start, "end": end, **labels})

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def set(self, name: str, seconds: float) -> None:
        self.values[name] = round(seconds, 4)
        self._record(name, seconds)

    def add(self, name: str, seconds: float) -> None:
        self.values[name] = round(self.values.get(name, 0.0) + seconds, 4)
        self._record(name, seconds)

    def _record(self, name: str, seconds: float) -> None:
        extra = {"turn_id": self.turn_id, "stage": name, "seconds": round(seconds, 4)}
        log.info("turn=%s stage=%s seconds=%.3f", self.turn_id, name, seconds, extra=extra)
        metrics.observe_stage(name, seconds)


def stage_failure(stage: str, exc: Exception) -> StageError:
    """A stage's refusal of the client's input (ClientError: code and message safe to show, e.g. an
    unusable voice clip) passes on as it is; any other failure is only named."""
    cause = getattr(exc, "cause", exc)  # Ray wraps an exception raised in a replica
    if isinstance(cause, ClientError):
        return StageError(stage, cause.code, cause.message)
    return StageError(stage, "stage_failed", f"{stage} failed: {type(exc).__name__}")


async def call_stage(stage: str, response: Awaitable, timeout_s: float) -> Any:
    """Await one stage request with a deadline; cancel it if we stop waiting."""
    # asyncio.timeout, not wait_for: on Python 3.11 wait_for can return a result that lands in the
    # same step as a cancellation and swallow the cancellation, so a cancelled turn would hang.
    try:
        async with asyncio.timeout(timeout_s):
            return await response
    except TimeoutError:
        # Awaiting a DeploymentResponse does not cancel the request when the wait ends (Ray 2.60's
        # __await__ only re-raises): without this the replica would go on working for nobody.
        response.cancel()
        raise StageError(stage, "stage_timeout", f"{stage} took longer than {timeout_s:g} s") from None
    except asyncio.CancelledError:
        response.cancel()
        raise
    except Exception as exc:
        raise stage_failure(stage, exc) from exc


async def stream_stage(stage: str, stream: Any, timeout_s: float) -> AsyncIterator[Any]:
    """The items of a streaming stage request, each within `timeout_s`; the request is cancelled
    whenever we stop early (a closed generator, a cancelled task, a deadline)."""
    try:
        while True:
            try:
                async with asyncio.timeout(timeout_s):  # not wait_for: see call_stage
                    item = await anext(stream)
            except StopAsyncIteration:
                return
            except TimeoutError:
                raise StageError(stage, "stage_timeout", f"{stage} took longer than {timeout_s:g} s") from None
            except (asyncio.CancelledError, StageError):
                raise
            except Exception as exc:
                raise stage_failure(stage, exc) from exc
            yield item
    finally:
        stream.cancel()  # a no-op once the stream has finished


class AudioBuffer:
    """A sentence's audio as it arrives, handed to the animator in pieces of whole video frames, so
    fragments join without a gap; only the sentence's last piece may end mid-frame."""

    def __init__(self, fps: int):
        self.fps, self.chunks, self.rate = fps, [], 0

    def add(self, chunk: Speech) -> None:
        self.chunks.append(chunk.pcm)
        self.rate = chunk.sample_rate

    @property
    def seconds(self) -> float:
        return sum(map(len, self.chunks)) / self.rate if self.rate else 0.0

    def take(self, everything: bool) -> Speech | None:
        """All of it, or whole frames keeping the last one back (so the sentence's final piece,
        which carries `last`, is never empty)."""
        pcm = np.concatenate(self.chunks) if self.chunks else np.zeros(0, np.float32)
        if everything:
            n = pcm.size
        elif self.rate % self.fps:
            return None  # frames do not fall on whole samples: send the sentence whole
        else:
            per_frame = self.rate // self.fps
            n = (pcm.size // per_frame - 1) * per_frame
        if n <= 0:
            return None
        self.chunks = [pcm[n:]]
        return Speech(pcm[:n], self.rate)


class Turn:
    """One turn's work and its one outcome: completed, failed, no_speech or cancelled."""

    END_GRACE_S = 0.05  # how long a TTS chunk waits to learn whether it is its sentence's last

    def __init__(
        self, stages: Stages, cfg: AppConfig, conv: Conversation, pcm: np.ndarray, turn_id: str, counts: TurnCounts,
        heard: asyncio.Task | None = None,
    ):
        """`counts`: the replica's turn counters (started, and one per outcome), for every transport.
        `heard`: ASR of exactly this speech, already asked for (at the pause where it ended, hands-free):
        the turn waits for it instead of asking again, and asks itself if that request failed."""
        self.stages, self.cfg, self.conv, self.pcm, self.turn_id = stages, cfg, conv, pcm, turn_id
        self.counts, self.heard = counts, heard
        self.timeout_s = cfg.limits.stage_timeout_s
        self.timings = Timings(turn_id)
        self.events: asyncio.Queue = asyncio.Queue()
        self.sentences: asyncio.Queue = asyncio.Queue()
        self.audio: asyncio.Queue = asyncio.Queue(maxsize=4)  # TTS runs about a sentence ahead
        self.reply: list[str] = []
        self.spoken: dict[int, str] = {}  # sentences of which a fragment reached the transport
        self.fragments = 0
        self.playback = playback.TurnPlayback(playback.session(conv.id), counts)  # the client's clock
        self.failed = False
        self.outcome = "cancelled"  # unless the event stream reaches its end

    async def run(self) -> AsyncIterator[tuple[TurnEvent, bytes | None]]:
        """The turn's events, each with its media bytes (a segment's fragment; None for the rest):
        turn, transcript, reply deltas, segments, then done or error."""
        self.counts.inc("started")
        yield TurnStarted(turn_id=self.turn_id, session_id=self.conv.id), None
        text = ""
        try:
            try:
                text = await self.hear()
            except StageError as exc:
                self.outcome = "failed"
                yield error(exc.code, exc.message), None
                return
            yield Transcript(text=text), None
            if not text:
                self.outcome = "no_speech"
                yield error("no_speech", "no speech was recognised in the audio"), None
                return
            pipeline = asyncio.create_task(self.pipeline(text))
            try:
                while (item := await self.events.get()) is not _END:
                    event, _ = item
                    if isinstance(event, Segment):  # handed to the client: the history keeps it
                        self.spoken.setdefault(event.sentence, event.text)
                    yield item
                self.outcome = "failed" if self.failed else "completed"
                if not self.failed:
                    self.timings.set("total", self.timings.elapsed())
                    yield Done(timings=self.timings.values), None
            finally:
                pipeline.cancel()
                await asyncio.gather(pipeline, return_exceptions=True)
        finally:
            log.info("turn=%s outcome=%s", self.turn_id, self.outcome,
                     extra={"turn_id": self.turn_id, "outcome": self.outcome})
            # Remember only what the user got: the whole reply, or the sentences sent so far.
            completed = self.outcome == "completed"
            said = "".join(self.reply).strip() if completed else " ".join(self.spoken.values())
            self.conv.remember(text, said, self.turn_id)
            self.playback.close()
            self.counts.inc(self.outcome)

    async def hear(self) -> str:
        started = time.perf_counter()
        if self.heard is not None:
            try:
                text = await self.heard
            except StageError:
                pass  # ask again below
            else:
                self.timings.set("asr", time.perf_counter() - started)  # the wait: ASR began at the pause
                self.timings.span("asr", started, reused=True)
                return text
        request = self.stages.asr.transcribe.remote(self.pcm, self.conv.language, self.conv.last_reply())
        text = await call_stage("asr", request, self.timeout_s)
        self.timings.set("asr", time.perf_counter() - started)
        self.timings.span("asr", started)
        return text

    async def pipeline(self, text: str) -> None:
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(self.think(text))
                group.create_task(self.speak())
                group.create_task(self.animate())
        except* StageError as errors:
            first = errors.exceptions[0]
            self.failed = True
            await self.events.put((error(first.code, first.message), None))
        except* Exception as errors:  # a bug: say so, and leave the traceback in the log
            log.error("turn=%s failed", self.turn_id, exc_info=errors.exceptions[0])
            self.failed = True
            await self.events.put((error("internal_error", "the turn failed on the server"), None))
        finally:
            self.events.put_nowait(_END)

    async def think(self, text: str) -> None:
        """Stream the reply; every sentence goes to TTS the moment it ends."""
        splitter, started = SentenceSplitter(growth=self.cfg.tts.piece_growth), time.perf_counter()
        written = [started]  # when the LLM began writing each sentence

        async def sentence_done(sentence: str) -> None:
            if len(written) == 1:
                self.timings.set("first_clause", self.timings.elapsed())  # the waterfall's
            self.timings.span("llm", written[-1], sentence=len(written) - 1)
            written.append(time.perf_counter())
            await self.sentences.put(sentence)

        messages = self.conv.messages(self.cfg.llm, text)
        async for delta in stream_stage("llm", self.stages.chat(messages), self.timeout_s):
            if not self.reply:
                self.timings.set("llm_first_token", time.perf_counter() - started)
            self.reply.append(delta)
            await self.events.put((ReplyDelta(text=delta), None))
            for sentence in splitter.push(delta):
                await sentence_done(sentence)
        for sentence in splitter.flush():
            await sentence_done(sentence)
        await self.sentences.put(_END)
        self.timings.set("llm", time.perf_counter() - started)

    async def speak(self) -> None:
        """Each sentence's audio chunks as TTS makes them, each marked when it is the sentence's
        last (so the animator can cut the sentence into fragments in one go)."""
        conv, index = self.conv, 0
        while (sentence := await self.sentences.get()) is not _END:
            started, waited = time.perf_counter(), 0.0
            request = self.stages.tts.options(stream=True).stream.remote(sentence, conv.voice_id, conv.language)
            chunks = stream_stage("tts", request, self.timeout_s)
            chunk = await anext(chunks, None)
            if index == 0 and chunk is not None:
                self.timings.set("first_audio", self.timings.elapsed())  # the waterfall's
            if chunk is None:
                await self.audio.put((index, sentence, None, True))  # no audio at all
            while chunk is not None:
                following = asyncio.ensure_future(anext(chunks, None))
                try:
                    # Is this the last chunk? A stream that ends within END_GRACE_S says so;
                    # otherwise pass the chunk on now and learn it with the next one.
                    done, _ = await asyncio.wait({following}, timeout=self.END_GRACE_S)
                    ends = bool(done) and following.result() is None
                    put = time.perf_counter()
                    await self.audio.put((index, sentence, chunk, ends))
                    waited += time.perf_counter() - put
                    chunk = await following
                finally:
                    following.cancel()
                if chunk is None and not ends:
                    await self.audio.put((index, sentence, None, True))
            self.timings.add("tts", time.perf_counter() - started - waited)
            self.timings.span("tts", started, sentence=index)
            index += 1
        await self.audio.put(_END)

    async def animate(self) -> None:
        """Sentence by sentence, in order: hand the animator the audio received so far once it is a
        fragment's worth (or the sentence has ended), and pass its fragments on."""
        fps = self.cfg.animator.fps
        while (item := await self.audio.get()) is not _END:
            index, sentence, chunk, ended = item
            audio = AudioBuffer(fps)
            while True:
                if chunk is not None:
                    audio.add(chunk)
                if not ended and (audio.seconds < self.fragment_s() or not self.audio.empty()):
                    _, _, chunk, ended = await self.audio.get()
                    continue
                piece = audio.take(everything=ended)
                if piece is not None:
                    await self.render(index, sentence, piece, ended)
                if ended:
                    break
                _, _, chunk, ended = await self.audio.get()

    def fragment_s(self) -> float:
        """The next fragment's length: the turn's first short (or as long as the client's hold), the
        rest up to `fragment_s`, each at most `fragment_growth` times the one before."""
        cfg = self.cfg.animator
        if self.fragments == 0:
            return self.playback.first_fragment_s(cfg.first_fragment_s, cfg.fragment_s)
        if cfg.fragment_growth is None:
            return cfg.fragment_s
        # from a piece's short tail it grows from the first fragment's length, not from the tail
        return min(cfg.fragment_s, cfg.fragment_growth * max(cfg.first_fragment_s, self.playback.durations[-1]))

    async def render(self, index: int, sentence: str, piece: Speech, ends_sentence: bool) -> None:
        cfg, conv = self.cfg.animator, self.conv
        first_s = self.fragment_s()
        n_frames = -(-piece.pcm.size * cfg.fps // piece.sample_rate)
        count = len(fragment_bounds(n_frames, cfg.fps, first_s, cfg.fragment_s, cfg.fragment_growth))
        started = time.perf_counter()
        async with conv.anim_lock:
            # the animator makes each fragment on the best rung that reaches the client in time
            request = self.stages.face(conv.id).options(stream=True).animate.remote(
                piece, conv.anim_state, conv.avatar_id, first_s, cfg.fragment_s,
                self.playback.deadline(), self.playback.rung, self.playback.hold_s, cfg.fragment_growth,
            )
            k, since = 0, started
            async for fragment in stream_stage("animator", request, self.timeout_s):
                self.timings.span("animator", since, sentence=index, fragment=self.fragments)
                since = time.perf_counter()
                conv.anim_state = fragment.state
                if self.fragments == 0:
                    self.timings.set("first_segment", self.timings.elapsed())
                segment = Segment(
                    index=self.fragments, sentence=index, last=ends_sentence and k == count - 1,
                    text=sentence, duration_s=fragment.duration_s, mime=fragment.mime, rung=fragment.rung,
                    hold_s=self.playback.hold_s if self.fragments == 0 else None,
                )
                await self.events.put((segment, fragment.data))
                self.playback.sent(fragment.duration_s, fragment.rung)
                self.fragments += 1
                k += 1
        self.timings.add("animator", time.perf_counter() - started)
