"""The llama.cpp backend evaluates the system prompt once (backends/llama_cpp.py, `prefix_cache`):
a turn evaluates only the history and the new message, and a reply never depends on the requests
before it. On the embedded model, in this process (no Serve)."""

import asyncio

import pytest

pytest.importorskip("llama_cpp")

from backends.llama_cpp import LlamaCpp  # noqa: E402

SYSTEM = ("You are a friendly avatar in a spoken conversation. Answer in one short sentence. "
          "For example: What is the capital of Germany? The capital of Germany is Berlin.")


def conversation(question: str, history: tuple[tuple[str, str], ...] = ()) -> list[dict]:
    messages = [{"role": "system", "content": SYSTEM}]
    for user, assistant in history:
        messages += [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]
    return messages + [{"role": "user", "content": question}]


def reply(llm: LlamaCpp, messages: list[dict]) -> str:
    async def run():
        return "".join([d async for d in llm.chat(messages, 24, 0.0)])

    return asyncio.run(run())


@pytest.fixture(scope="module")
def llm():
    return LlamaCpp(LlamaCpp.Config())


def evaluated(llm: LlamaCpp, messages: list[dict]) -> tuple[str, list[int]]:
    """The reply, and how many tokens each evaluation of the request took (the first: the prompt)."""
    calls, original = [], llm.llm.eval

    def counting(tokens):
        calls.append(len(tokens))
        return original(tokens)

    llm.llm.eval = counting
    try:
        return reply(llm, messages), calls
    finally:
        llm.llm.eval = original


def test_a_turn_evaluates_only_what_follows_the_system_prompt(llm):
    first = conversation("What is the opposite of cold?")
    text, calls = evaluated(llm, first)
    prompt = len(llm._tokens(first))
    assert llm._primed == SYSTEM and 0 < llm._primed_n < prompt
    assert calls[0] == llm._primed_n  # the system prompt, alone, once
    assert calls[1] == prompt - llm._primed_n and all(n == 1 for n in calls[2:])  # then the rest, token by token
    assert "cold" in text.lower()  # it answers the question asked

    follow_up = conversation("And the opposite of up?", (("What is the opposite of cold?", text),))
    _, calls = evaluated(llm, follow_up)
    assert calls[0] == len(llm._tokens(follow_up)) - llm._primed_n  # no system prompt this time


def test_replies_do_not_depend_on_the_requests_before(llm):
    a, b = conversation("Name a big animal."), conversation("What do cows drink?", (("Hi.", "Hello!"),))
    first = reply(llm, a)
    reply(llm, b)
    assert reply(llm, a) == first
    fresh = LlamaCpp(LlamaCpp.Config())
    assert reply(fresh, a) == first  # a new context, primed by this very request


def test_the_health_probe_keeps_the_cached_prompt(llm):
    reply(llm, conversation("Say hello."))
    asyncio.run(llm.probe())
    messages = conversation("Say goodbye.")
    _, calls = evaluated(llm, messages)
    assert calls[0] == len(llm._tokens(messages)) - llm._primed_n


def test_without_the_cache_every_turn_evaluates_the_whole_prompt():
    llm = LlamaCpp(LlamaCpp.Config(prefix_cache=False))
    for question in ("What is the opposite of cold?", "And of up?"):
        messages = conversation(question)
        _, calls = evaluated(llm, messages)
        assert calls[0] == len(llm._tokens(messages))


def test_a_new_replicas_warm_up_caches_the_prompt_an_english_conversation_sends():
    from serve_app.conversation import Conversation

    cfg = LlamaCpp.Config(system_prompt=SYSTEM)
    fresh = LlamaCpp(cfg)
    asyncio.run(fresh.probe())  # what the stage does when its replica starts
    messages = Conversation("c").messages(cfg, "What do cows drink?")
    _, calls = evaluated(fresh, messages)
    assert calls[0] == len(fresh._tokens(messages)) - fresh._primed_n  # the first turn: only what follows it


def test_without_the_cache_the_health_probe_evaluates_no_system_prompt():
    llm = LlamaCpp(LlamaCpp.Config(prefix_cache=False, system_prompt=SYSTEM))
    calls, original = [], llm.llm.eval
    llm.llm.eval = lambda tokens: (calls.append(len(tokens)), original(tokens))[1]
    asyncio.run(llm.probe())
    assert calls[0] == len(llm._tokens([{"role": "user", "content": "Hello."}]))  # not the prompt, every probe
