"""check_health's policy: cheap while busy or recently useful, a real inference when idle too long;
and /healthz, which reads Serve's status instead of asking the stages."""

import asyncio
import time
from typing import ClassVar, Literal

import httpx
import pytest

from avatar_core.config import LlmConfig
from avatar_core.registry import register
from deployments.counters import RequestCounters
from deployments.health import HealthProbe
from deployments.llm import LLM
from serve_app.builder import stage_app
from tests.conftest import app_config, second_app, stage_stats, stages_when_idle
from tests.test_seam import EchoChat


def test_probe_runs_only_when_idle_long_enough_and_failures_surface():
    counters, calls = RequestCounters(), []

    async def inference():
        calls.append(1)

    probe = HealthProbe(counters, inference, probe_every_s=0.05)
    asyncio.run(probe.check(object()))
    assert calls == []  # just used: no inference needed
    time.sleep(0.06)
    counters.counts["in_flight"] = 1
    asyncio.run(probe.check(object()))
    assert calls == []  # a request is running: never compete with it
    counters.counts["in_flight"] = 0
    asyncio.run(probe.check(object()))
    assert calls == [1]
    asyncio.run(probe.check(object()))
    assert calls == [1]  # the probe itself counts as recent proof

    with pytest.raises(RuntimeError, match="not loaded"):
        asyncio.run(probe.check(None))

    async def broken():
        raise RuntimeError("onnxruntime session is gone")

    failing = HealthProbe(RequestCounters(), broken, probe_every_s=0.01)
    time.sleep(0.02)
    with pytest.raises(RuntimeError, match="gone"):
        asyncio.run(failing.check(object()))


STAGES = ("ASR", "LLM", "TTS", "Animator")


def test_healthz_sends_no_request_to_any_stage(serve_app):
    before = stages_when_idle(STAGES)  # an earlier test's turn may still be winding down
    for _ in range(30):
        r = httpx.get(f"{serve_app}/healthz", timeout=30)
        assert r.status_code == 200 and r.json()["stages"] == dict.fromkeys(("asr", "llm", "tts", "animator"), "ready")
        time.sleep(0.05)  # past the 1 s cache a few times
    after = {n: stage_stats(n) for n in STAGES}
    assert {n: after[n]["started"] for n in STAGES} == {n: before[n]["started"] for n in STAGES}


@register("llm", "slow")
class SlowChat(EchoChat):
    """A toy LLM backend that holds its one slot for seconds: a word every half second."""

    class Config(LlmConfig):
        backend: Literal["slow"] = "slow"
        words: int = 12

    max_concurrency: ClassVar[int] = 1

    async def chat(self, messages, max_tokens, temperature):
        for k in range(self.cfg.words):
            await asyncio.sleep(0.5)
            yield f"word{k} "


def test_healthz_answers_ok_while_the_llm_is_busy(serve_app):
    """An LLM stage with max_ongoing_requests 1 is busy with a turn: health must not queue behind it
    (it used to send each stage a request, wait 2 s and call the busy one "starting")."""
    from ray import serve

    cfg = app_config().model_copy(update={"llm": SlowChat.Config()})
    base = second_app(serve_app, "slow", cfg, own={"llm": stage_app(LLM, "llm", cfg.llm)})
    llm = serve.get_deployment_handle("LLM", app_name="slow")

    async def busy_then_check():
        stream = llm.options(stream=True).chat.remote([{"role": "user", "content": "hello"}])
        first = await anext(stream)  # the LLM is working now, for about five more seconds
        answers = []
        async with httpx.AsyncClient(timeout=30) as client:
            while True:
                busy = (await asyncio.to_thread(stage_stats, "LLM", "slow"))["in_flight"]
                r = await client.get(f"{base}/healthz")
                still = (await asyncio.to_thread(stage_stats, "LLM", "slow"))["in_flight"]
                answers.append((busy and still, r.status_code, r.json()["stages"]["llm"], time.monotonic()))
                if not still:
                    break
                await asyncio.sleep(0.1)
        rest = [d async for d in stream]
        return first, rest, answers

    try:
        first, rest, answers = asyncio.run(busy_then_check())
    finally:
        serve.delete("slow")
    during = [a[3] for a in answers if a[0]]
    # health answered throughout, over more than one refresh of its 1 s status cache
    assert during and during[-1] - during[0] > 2, f"the LLM finished too soon to tell: {answers}"
    assert all(code == 200 and llm == "ready" for _, code, llm, _ in answers), answers
    assert [first, *rest] == [f"word{k} " for k in range(12)]
