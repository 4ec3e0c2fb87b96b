"""One conversation turn: the user's speech in; transcript, streamed reply and ordered segments out.

    speech ─ASR─> text ─LLM─> deltas ─splitter─> sentences ─TTS─> speech ─Animator─> segments

The LLM, TTS and animator run as three tasks joined by queues, so sentence n+1 is synthesised while
sentence n is animated, and segments still leave strictly in order. Closing the event stream (client
gone, barge-in) cancels every task and the stage requests they are waiting on.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from ray.serve.handle import DeploymentHandle

from serve_app import metrics
from serve_app.sentences import SentenceSplitter

log = logging.getLogger("ray.serve")
_END = object()


@dataclass(frozen=True)
class Stages:
    asr: DeploymentHandle
    llm: DeploymentHandle
    tts: DeploymentHandle
    animator: DeploymentHandle


@dataclass
class Conversation:
    """What one conversation carries from turn to turn."""

    id: str
    history: list[dict[str, str]] = field(default_factory=list)
    anim_state: Any = None  # the animator's continuity state, passed back on every call
    avatar_id: str = "default"
    voice_id: str = "default"  # stored for the voice-cloning TTS backend; Piper has one voice
    language: str = "en"
    max_messages: int = 24
    # Speech and idle (listening) video both advance anim_state; one render at a time keeps the
    # animation clock continuous across them.
    anim_lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def remember(self, user_text: str, said: str) -> None:
        if said:
            self.history += [{"role": "user", "content": user_text}, {"role": "assistant", "content": said}]
            del self.history[: -self.max_messages]


    def keep_heard(self, said: str) -> None:
        """The user interrupted playback: the last reply becomes what they heard of it."""
        if len(self.history) >= 2 and self.history[-1]["role"] == "assistant":
            if said:
                self.history[-1] = {"role": "assistant", "content": said}
            else:
                del self.history[-2:]


class StageError(Exception):
    def __init__(self, stage: str, code: str, message: str):
        super().__init__(message)
        self.stage, self.code, self.message = stage, code, message


class Timings:
    """Per-stage seconds for one turn, logged (with `extra` fields for Serve's JSON log encoding) and
    recorded in the stage histogram the moment each is known."""

    def __init__(self, turn_id: str):
        self.turn_id = turn_id
        self.start = time.perf_counter()
        self.values: dict[str, float] = {}

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


async def call_stage(stage: str, response: Awaitable, timeout_s: float) -> Any:
    """Await one stage request with a deadline; cancel it if we stop waiting."""
    try:
        return await asyncio.wait_for(response, timeout_s)
    except asyncio.TimeoutError:
        # Awaiting a DeploymentResponse does not cancel the request when the wait ends (Ray 2.60's
        # __await__ only re-raises): without this the replica would go on working for nobody.
        response.cancel()
        raise StageError(stage, "stage_timeout", f"{stage} took longer than {timeout_s:g} s") from None
    except asyncio.CancelledError:
        response.cancel()
        raise
    except Exception as exc:
        raise StageError(stage, "stage_failed", f"{stage} failed: {type(exc).__name__}") from exc


def error_event(code: str, message: str) -> dict:
    metrics.count_error(code)
    return {"type": "error", "code": code, "message": message}


async def run_turn(
    stages: Stages, conv: Conversation, pcm: np.ndarray, turn_id: str, timeout_s: float
) -> AsyncIterator[dict]:
    """Yield the turn's events: transcript, reply deltas, segments (with their bytes in `data`), done."""
    timings = Timings(turn_id)
    yield {"type": "turn", "turn_id": turn_id, "session_id": conv.id}
    try:
        started = time.perf_counter()
        text = await call_stage("asr", stages.asr.transcribe.remote(pcm), timeout_s)
        timings.set("asr", time.perf_counter() - started)
    except StageError as exc:
        metrics.count_turn("failed")
        yield error_event(exc.code, exc.message)
        return
    yield {"type": "transcript", "text": text}
    if not text:
        metrics.count_turn("no_speech")
        yield error_event("no_speech", "no speech was recognised in the audio")
        return

    events: asyncio.Queue = asyncio.Queue()
    sentences: asyncio.Queue = asyncio.Queue()
    speech: asyncio.Queue = asyncio.Queue(maxsize=1)  # TTS runs one sentence ahead of the animator
    reply: list[str] = []
    spoken: list[str] = []

    async def think() -> None:
        splitter = SentenceSplitter()
        started = time.perf_counter()
        stream = stages.llm.options(stream=True).generate.remote(conv.history, text)
        try:
            async for delta in stream:
                if not reply:
                    timings.set("llm_first_token", time.perf_counter() - started)
                reply.append(delta)
                await events.put({"type": "reply", "text": delta})
                for sentence in splitter.push(delta):
                    await sentences.put(sentence)
        except asyncio.CancelledError:
            stream.cancel()
            raise
        except Exception as exc:
            raise StageError("llm", "stage_failed", f"llm failed: {type(exc).__name__}") from exc
        for sentence in splitter.flush():
            await sentences.put(sentence)
        await sentences.put(_END)
        timings.set("llm", time.perf_counter() - started)

    async def speak() -> None:
        while (sentence := await sentences.get()) is not _END:
            started = time.perf_counter()
            audio = await call_stage("tts", stages.tts.synthesize.remote(sentence), timeout_s)
            timings.add("tts", time.perf_counter() - started)
            await speech.put((sentence, audio))
        await speech.put(_END)

    async def animate() -> None:
        while (item := await speech.get()) is not _END:
            sentence, audio = item
            started = time.perf_counter()
            async with conv.anim_lock:
                seg = await call_stage(
                    "animator",
                    stages.animator.render_segment.remote(audio, conv.anim_state, conv.avatar_id),
                    timeout_s,
                )
                conv.anim_state = seg.state
            timings.add("animator", time.perf_counter() - started)
            if not spoken:
                timings.set("first_segment", timings.elapsed())
            await events.put(
                {
                    "type": "segment",
                    "index": len(spoken),
                    "text": sentence,
                    "duration_s": seg.duration_s,
                    "mime": seg.mime,
                    "data": seg.data,
                }
            )
            spoken.append(sentence)

    async def run_pipeline() -> None:
        tasks = [asyncio.create_task(coro()) for coro in (think, speak, animate)]
        try:
            await asyncio.gather(*tasks)
        except StageError as exc:
            await events.put(error_event(exc.code, exc.message))
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await events.put(_END)

    pipeline = asyncio.create_task(run_pipeline())
    completed = failed = False
    outcome = "cancelled"  # unless the loop below finishes
    try:
        while (event := await events.get()) is not _END:
            failed |= event["type"] == "error"
            yield event
        outcome = "failed" if failed else "completed"
        if not failed:
            completed = True
            timings.set("total", timings.elapsed())
            yield {"type": "done", "timings": timings.values}
    finally:
        metrics.count_turn(outcome)
        log.info("turn=%s outcome=%s", turn_id, outcome, extra={"turn_id": turn_id, "outcome": outcome})
        pipeline.cancel()
        await asyncio.gather(pipeline, return_exceptions=True)
        # Remember only what the user actually got: the whole reply, or the sentences sent so far.
        conv.remember(text, "".join(reply).strip() if completed else " ".join(spoken))
