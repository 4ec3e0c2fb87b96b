"""The vLLM backend's config and client, without vLLM: its section validates in any venv (Ray's own
schemas for the Serve options), and the LLM server's server-sent events become text deltas. The real
engine runs in tests/test_vllm.py."""

import asyncio
import json
import subprocess
import sys

import pytest
from pydantic import ValidationError

from avatar_core.config import AppConfig
from backends.vllm import ChatStream, LlmServerError, sse_deltas
from tests.conftest import ROOT


def vllm(**fields) -> AppConfig:
    return AppConfig.model_validate({"llm": {"backend": "vllm", **fields}})


def test_the_section_takes_llm_configs_fields_and_imports_nothing_of_vllm():
    cfg = vllm(
        model_loading_config={"model_id": "qwen", "model_source": "/models/qwen-awq"},
        engine_kwargs={"max_model_len": 4096, "gpu_memory_utilization": 0.85},
        deployment_config={"max_ongoing_requests": 32,
                           "autoscaling_config": {"min_replicas": 1, "max_replicas": 4, "target_ongoing_requests": 8}},
        accelerator_type="L4",
        placement_group_config={"bundles": [{"GPU": 1, "CPU": 4}]},
        experimental_configs={"stream_batching_interval_ms": 0, "num_ingress_replicas": 2},
    )
    assert cfg.llm.experimental_configs.model_dump() == {"stream_batching_interval_ms": 0, "num_ingress_replicas": 2}
    assert cfg.languages() == ["en"]  # the LLM takes any language; tiny.en decides
    assert AppConfig.model_validate(cfg.model_dump(mode="json")) == cfg


def test_choosing_the_backend_imports_nothing_of_vllm():
    """In a fresh interpreter: validating the section and asking for its languages."""
    code = (
        "import sys; from avatar_core.config import AppConfig; "
        "AppConfig.model_validate({'llm': {'backend': 'vllm'}}).languages(); "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('vllm', 'torch') or m.startswith('ray.llm')))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"deployment_config": {"autoscaling_config": {"min_replicas": "x"}}}, "autoscaling_config.min_replicas"),
        ({"deployment_config": {"ray_actor_options": {"num_cpus": "x"}}}, "ray_actor_options.num_cpus"),
        ({"deployment_config": {"replicas": 2}}, "unknown Serve deployment options: replicas"),
        ({"deployment_config": {"name": "Mine"}}, "name is not set here"),
        ({"engine_kwargs": {"model": "x"}}, "model comes from model_loading_config"),
        ({"placement_group_config": {"bundles": [{"GPU": 1}], "strategy": "NEAR"}}, "placement_group_config.strategy"),
        ({"placement_group_config": {}}, "give either bundles or bundle_per_worker"),
        ({"experimental_configs": {"stream_batching_interval_ms": -1}}, "stream_batching_interval_ms"),
        ({"n_threads": 2}, "n_threads: Extra inputs are not permitted"),
    ],
)
def test_a_bad_section_fails_and_says_where(fields, message):
    with pytest.raises(ValidationError) as err:
        vllm(**fields)
    assert "llm backend 'vllm'" in str(err.value) and message in str(err.value)


def sse(text: str | None = None, **extra) -> str:
    choice = {"index": 0, "delta": {"content": text} if text is not None else {}}
    return "data: " + json.dumps({"id": "chatcmpl-1", "choices": [choice], **extra}) + "\n\n"


def test_server_sent_events_become_text_deltas():
    assert sse_deltas(sse("Hel")) == ["Hel"]
    assert sse_deltas(sse("a") + sse("b")) == ["a", "b"]  # two events in one string
    assert sse_deltas(sse(None)) == [] and sse_deltas(sse("")) == []  # role-only and empty chunks
    assert sse_deltas("data: [DONE]\n\n") == []
    with pytest.raises(LlmServerError, match="too long"):
        sse_deltas('data: {"error": {"message": "prompt too long", "code": 400}}\n\n')


class StandInResponse:
    """Stands in for Serve's DeploymentResponseGenerator: lists of SSE strings, then the end."""

    def __init__(self, batches):
        self.batches, self.cancelled = iter(batches), False

    async def __anext__(self):
        try:
            return next(self.batches)
        except StopIteration:
            raise StopAsyncIteration from None

    def cancel(self):
        self.cancelled = True


def test_chat_stream_unbatches_chunk_lists_and_cancels_the_request_stand_in_response():
    response = StandInResponse([[sse(None), sse("Hello")], [sse(" there"), sse("."), "data: [DONE]\n\n"]])
    stream = ChatStream(response)

    async def read():
        return [delta async for delta in stream]

    assert asyncio.run(read()) == ["Hello", " there", "."]
    stream.cancel()
    assert response.cancelled


def test_an_error_object_from_the_server_fails_the_stream():
    class ErrorResponse:  # what the LLM server yields (inside a list) when vLLM refuses a request
        class error:
            message = "max_tokens is too large"

    async def read():
        return [d async for d in ChatStream(StandInResponse([[ErrorResponse()]]))]

    with pytest.raises(LlmServerError, match="too large"):
        asyncio.run(read())


def test_the_gpu_docs_l4_section_validates():
    """docs/gpu.md's `llm` section (copied into the cluster configs) is a valid vllm section."""
    import yaml

    text = (ROOT / "docs" / "gpu.md").read_text()
    block = text[text.index("### LLM on an L4"):].split("```yaml\n", 1)[1].split("```", 1)[0]
    llm = AppConfig.model_validate(yaml.safe_load(block)).llm
    assert llm.accelerator_type == "L4" and llm.placement_group_config.bundles == [{"GPU": 1, "CPU": 4}]
    assert llm.deployment_config["autoscaling_config"]["target_ongoing_requests"] == 8
