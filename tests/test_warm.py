"""A new Ingress replica opens the route to each stage before its first turn (TurnService.warm)."""

import asyncio
import logging

from avatar_core.config import AppConfig
from serve_app.service import TurnService
from serve_app.turn import Stages


class StandInHandle:
    """Stand-in for a DeploymentHandle: counts `stats.remote()` calls; `fails` answers with an error."""

    def __init__(self, name: str, fails: bool = False):
        self.deployment_name, self.fails, self.calls = name, fails, 0
        self.stats = self

    def remote(self):
        self.calls += 1

        async def answer():
            if self.fails:
                raise RuntimeError("no replica")
            return {}

        return answer()


def test_warming_calls_each_stage_once_and_a_failure_is_only_logged_with_stand_in_handles(tmp_path, caplog):
    cfg = AppConfig.model_validate({"storage": {"dir": str(tmp_path)}})
    handles = [StandInHandle("ASR"), StandInHandle("LLM"), StandInHandle("TTS", fails=True), StandInHandle("Animator")]
    service = TurnService(Stages(*handles), cfg)
    with caplog.at_level(logging.WARNING, logger="ray.serve"):
        asyncio.run(service.warm())
    assert [h.calls for h in handles] == [1, 1, 1, 1]
    assert [r.getMessage() for r in caplog.records] == ["warming the route to TTS failed: RuntimeError('no replica')"]


def test_an_llm_served_by_rays_own_server_is_not_asked_for_our_stats_with_stand_in_handles(tmp_path):
    cfg = AppConfig.model_validate({"storage": {"dir": str(tmp_path)}})
    handles = [StandInHandle("ASR"), StandInHandle("LLMServer"), StandInHandle("TTS"), StandInHandle("Animator")]
    service = TurnService(Stages(*handles, llm_client=lambda messages: None), cfg)
    asyncio.run(service.warm())
    assert [h.calls for h in handles] == [1, 0, 1, 1]
