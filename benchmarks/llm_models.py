"""Which GGUF should the embedded LLM use? Speed and sample answers of each named llama-cpp model
(backends/llama_cpp.py MODELS) on the same five questions, greedy.

    .venv/bin/python -m benchmarks.llm_models [--models smollm2-135m qwen2.5-coder-1.5b]
                                              [--prompt "another system prompt"]

Each model is the real backend class (`LlamaCpp`, 2 threads) fed the messages a turn builds
(`serve_app.conversation`: the configured system prompt plus the language line), and its reply
goes through the turn's own `SentenceSplitter`, so "first sentence" is the first piece the turn
would send to TTS. Per question: time to the first token, to the end of that first piece, and
decode speed (tokens after the first / time after the first; one delta is one token here).
Prints the medians over the questions, then every answer side by side.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import time
from pathlib import Path

from backends.llama_cpp import MODELS, LlamaCpp
from serve_app.conversation import Conversation
from serve_app.sentences import SentenceSplitter

ROOT = Path(__file__).resolve().parent.parent

QUESTIONS = [
    "Could you name three animals that live in the ocean?",
    "Why is the sky blue?",
    "What should I cook for dinner tonight?",
    "How do airplanes stay in the air?",
    "Can you tell me a short joke about computers?",
]


async def ask(llm: LlamaCpp, cfg, question: str) -> dict:
    messages = Conversation(id="bench").messages(cfg, question)
    splitter, pieces, reply, tokens = SentenceSplitter(), [], "", 0
    start = time.perf_counter()
    first = first_piece = None
    async for delta in llm.chat(messages, cfg.max_tokens, 0.0):
        now = time.perf_counter() - start
        first = first if first is not None else now
        tokens += 1
        reply += delta
        pieces += splitter.push(delta)
        if pieces and first_piece is None:
            first_piece = now
    total = time.perf_counter() - start
    pieces += splitter.flush()
    return {
        "first_token": first,
        "first_sentence": first_piece if first_piece is not None else total,
        "tok_s": (tokens - 1) / (total - first) if tokens > 1 and total > first else float("nan"),
        "total": total,
        "tokens": tokens,
        "reply": " ".join(reply.split()),
        "first_piece": pieces[0] if pieces else "",
    }


async def run_model(name: str, prompt: str | None) -> dict:
    overrides = {"model": name, "temperature": 0.0}
    if prompt:
        overrides["system_prompt"] = prompt
    cfg = LlamaCpp.Config(**overrides)
    started = time.perf_counter()
    llm = LlamaCpp(cfg)
    load = time.perf_counter() - started
    await llm.probe()  # as the replica does before it takes traffic
    answers = [await ask(llm, cfg, q) for q in QUESTIONS]
    med = {k: statistics.median(a[k] for a in answers) for k in ("first_token", "first_sentence", "tok_s", "total", "tokens")}
    return {"model": name, "load": load, **med, "answers": answers}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--prompt", help="a system prompt to try instead of the configured one")
    args = parser.parse_args()
    rows = [asyncio.run(run_model(m, args.prompt)) for m in args.models]

    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout
    print(f"\n{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, commit {commit.strip()}, llama.cpp, "
          f"2 threads, greedy, max_tokens {LlamaCpp.Config().max_tokens}; medians over {len(QUESTIONS)} questions")
    print(f"system prompt: {args.prompt or LlamaCpp.Config().system_prompt}")
    print("| model | first token s | first sentence s | tokens/s | whole reply s | reply tokens | load s |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['model']} | {r['first_token']:.2f} | {r['first_sentence']:.2f} | {r['tok_s']:.0f} | "
              f"{r['total']:.2f} | {r['tokens']:.0f} | {r['load']:.1f} |")
    print("\n| question | " + " | ".join(r["model"] for r in rows) + " |")
    print("|" + " --- |" * (len(rows) + 1))
    for i, q in enumerate(QUESTIONS):
        print(f"| {q} | " + " | ".join(r["answers"][i]["reply"].replace("|", "/") for r in rows) + " |")
    print("\nFirst pieces sent to TTS:")
    for r in rows:
        print(f"- {r['model']}: " + " / ".join(repr(a["first_piece"]) for a in r["answers"]))


if __name__ == "__main__":
    main()
