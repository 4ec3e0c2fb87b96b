"""The llama.cpp backend does not open a reply with the user's own words (`no_echo_tokens`,
backends/llama_cpp.py): SmolLM2-135M, told "It is my birthday today.", said it back word for word.
The guard's rule on token ids, and the embedded model in this process (no Serve), greedy."""

import asyncio

import numpy as np
import pytest

pytest.importorskip("llama_cpp")

from backends.llama_cpp import LlamaCpp  # noqa: E402


def messages(llm: LlamaCpp, said: str) -> list:
    return [{"role": "system", "content": llm.cfg.system_message("en")}, {"role": "user", "content": said}]


def reply(llm: LlamaCpp, said: str) -> str:
    async def run():
        return "".join([d async for d in llm.chat(messages(llm, said), 40, 0.0)])

    return asyncio.run(run())


@pytest.fixture(scope="module")
def shipped():
    return LlamaCpp(LlamaCpp.Config())


def opening(llm: LlamaCpp, text: str) -> list[int]:
    return llm.llm.tokenize(text.encode(), add_bos=False, special=False)


def test_only_the_token_that_would_complete_the_users_opening_is_lowered(shipped):
    said = "It is my birthday today."
    first = opening(shipped, said)[:3]
    guard = shipped._processors(messages(shipped, said))[-1]
    prompt = np.arange(50, dtype=np.intc)
    vocab = shipped.llm.n_vocab()

    def lowered(reply_so_far: list[int]) -> set[int]:
        scores = np.zeros(vocab, dtype=np.single)
        guard(np.concatenate([prompt, np.array(reply_so_far, dtype=np.intc)]), scores)
        return set(np.flatnonzero(scores < 0))

    assert lowered([]) == set()  # the first call learns the prompt's length
    assert lowered(first[:1]) == set()
    assert lowered(first[:2]) == {first[2]}  # "It is" may go on, but not with " my"
    assert lowered([first[1], first[0]]) == set()  # another opening: nothing
    assert lowered(first) == set()  # past the opening (not reachable, but harmless)


def test_the_guard_is_off_at_zero_and_for_short_messages():
    llm = LlamaCpp(LlamaCpp.Config(no_echo_tokens=0))
    assert llm._processors(messages(llm, "It is my birthday today.")) is llm._avoid
    shipped = LlamaCpp(LlamaCpp.Config(no_echo_tokens=8))
    assert shipped._processors(messages(shipped, "Hi.")) is shipped._avoid  # fewer than 8 tokens


def test_a_remark_is_not_said_back(shipped):
    said = "It is my birthday today."
    parrot = reply(LlamaCpp(LlamaCpp.Config(no_echo_tokens=0)), said)
    assert parrot.startswith("It is my birthday"), parrot  # the fault, without the guard
    answer = reply(shipped, said)
    assert not answer.startswith("It is my"), answer
    assert answer.strip(), answer


def test_a_reply_still_uses_the_users_words_after_its_opening(shipped):
    answer = reply(shipped, "What is the capital of France?")
    assert "Paris" in answer and "capital of France" in answer, answer
