"""Time to the first sentence from vLLM through `ray.serve.llm`, with Ray's default stream batching
interval (50 ms) and smaller ones, measured in one run; and the engine's decode rate on this machine.

    .venv-vllm/bin/python -m benchmarks.stream_batching [--runs 12] [--intervals 50 10]

One LLM server deployment per interval on one Ray cluster (each its own vLLM engine with the
embedded SmolLM2 on CPU, so Ray is told of more CPUs than there are: only one engine works at a
time). Requests alternate between them so machine noise falls on all alike; greedy decoding, so every
interval writes the same first sentence. Each request goes the way the ingress sends it
(`VllmServer.chat_client`: a streaming ChatCompletionRequest to the server's `chat`, its SSE chunks
turned into text deltas) into the turn's sentence splitter, and is cancelled once the first sentence
is out. Times are from the request, at the caller.
"""

import argparse
import asyncio
import os
import statistics
import time

from serve_app.local import use_local_ray

use_local_ray()  # before Ray is imported

import ray  # noqa: E402
from ray import serve  # noqa: E402

from avatar_core.config import AppConfig  # noqa: E402
from backends.vllm import VllmServer  # noqa: E402
from serve_app.conversation import Conversation  # noqa: E402
from serve_app.sentences import SentenceSplitter  # noqa: E402

QUESTIONS = [
    "Tell me about the moon.",
    "What should I cook for dinner tonight?",
    "Why is the sky blue?",
    "And so my fellow Americans, ask not what your country can do for you.",
]


def llm_config(interval_ms: float, max_tokens: int = 120) -> VllmServer.Config:
    section = {"backend": "vllm", "temperature": 0.0, "max_tokens": max_tokens,
               "experimental_configs": {"stream_batching_interval_ms": interval_ms}}
    return AppConfig.model_validate({"llm": section}).llm


async def first_sentence(client, messages) -> dict:
    """Time to the first delta and to the first whole sentence; Serve messages (chunk lists) and
    deltas received until then."""
    splitter, started = SentenceSplitter(), time.perf_counter()
    stream = client(messages)
    first_token, deltas = None, 0
    try:
        async for delta in stream:
            deltas += 1
            first_token = first_token or time.perf_counter() - started
            if splitter.push(delta):
                return {"first_token": first_token, "first_sentence": time.perf_counter() - started, "deltas": deltas}
        return {"first_token": first_token, "first_sentence": time.perf_counter() - started, "deltas": deltas}
    finally:
        stream.cancel()


async def decode_rate(client, messages) -> tuple[int, float]:
    """Tokens and tokens/s after the first, over a whole reply (vLLM streams one token per delta)."""
    times = [time.perf_counter() async for _ in client(messages)]
    return len(times), (len(times) - 1) / (times[-1] - times[0])


async def main(runs: int, intervals: list[float]) -> None:
    ray.init(num_cpus=2 * len(intervals), include_dashboard=False, log_to_driver=False)
    serve.start()  # once, before the deployments below start side by side
    started = time.perf_counter()
    await asyncio.gather(*(  # the engines start side by side
        asyncio.to_thread(serve.run, VllmServer.deployment(llm_config(ms)), name=f"b{ms:g}", route_prefix=None)
        for ms in intervals
    ))
    clients = {
        ms: VllmServer.chat_client(serve.get_deployment_handle("LLM", app_name=f"b{ms:g}"), llm_config(ms))
        for ms in intervals
    }
    print(f"{len(intervals)} LLM servers ready in {time.perf_counter() - started:.0f} s")
    conv = Conversation(id="bench")
    prompts = [conv.messages(llm_config(50), q) for q in QUESTIONS]
    for ms in intervals:  # one unmeasured request each
        await first_sentence(clients[ms], prompts[0])

    rows: dict[float, list[dict]] = {ms: [] for ms in intervals}
    for i in range(runs):
        for ms in intervals if i % 2 == 0 else intervals[::-1]:
            rows[ms].append(await first_sentence(clients[ms], prompts[i % len(prompts)]))
    rates = [await decode_rate(clients[intervals[0]], p) for p in prompts[:3]]

    base = intervals[0]
    print(f"\nvLLM {__import__('vllm').__version__} (CPU), SmolLM2-135M float32, {os.cpu_count()} CPUs, "
          f"{runs} requests per interval over {len(QUESTIONS)} prompts; medians (s)\n")
    print(f"| stream_batching_interval_ms | first token | first sentence | deltas to it | first sentence / {base:g} ms |")
    print("|---|---|---|---|---|")
    for ms, xs in rows.items():
        ratio = statistics.median(x["first_sentence"] / b["first_sentence"] for x, b in zip(xs, rows[base]))
        med = lambda k: statistics.median(x[k] for x in xs)  # noqa: E731
        print(f"| {ms:g} | {med('first_token'):.3f} | {med('first_sentence'):.3f} | {med('deltas'):.0f} | {ratio:.3f} |")
    print("\n| whole reply | tokens | tokens/s after the first |\n|---|---|---|")
    for q, (n, rate) in zip(QUESTIONS, rates):
        print(f"| {q} | {n} | {rate:.1f} |")
    serve.shutdown()
    ray.shutdown()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=12)
    parser.add_argument("--intervals", type=float, nargs="+", default=[50, 10])
    args = parser.parse_args()
    asyncio.run(main(args.runs, args.intervals))
