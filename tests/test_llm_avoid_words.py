"""The llama.cpp backend keeps `avoid_words` out of replies (backends/llama_cpp.py): SmolLM2-135M,
asked for help with the shipped system prompt, apologises "as a digital avatar" without it. On the
embedded model, in this process (no Serve), greedy."""

import asyncio
import re

import numpy as np
import pytest

pytest.importorskip("llama_cpp")

from backends.llama_cpp import LlamaCpp  # noqa: E402


def reply(llm: LlamaCpp, question: str) -> str:
    messages = [{"role": "system", "content": llm.cfg.system_message("en")}, {"role": "user", "content": question}]

    async def run():
        return "".join([d async for d in llm.chat(messages, 60, 0.0)])

    return asyncio.run(run())


@pytest.fixture(scope="module")
def shipped():
    return LlamaCpp(LlamaCpp.Config())


def test_each_one_token_spelling_of_an_avoided_word_is_lowered(shipped):
    (lower,) = shipped._avoid
    spelled = {shipped.llm.detokenize([i]).decode() for i in lower.ids}
    allowed = {s for w in shipped.cfg.avoid_words for c in {w, w.capitalize()} for s in (c, " " + c)}
    assert spelled <= allowed and {" sorry", "Sorry", " AI", " virtual", " digital", " assistant"} <= spelled
    out = lower(None, np.zeros(shipped.llm.n_vocab(), np.float32))
    assert (out[lower.ids] == -100.0).all() and np.count_nonzero(out) == len(lower.ids)


def test_a_word_of_several_tokens_is_left_alone():
    """'chatbot' is ' chat' + 'bot' here: lowering ' chat' would take "chat" from every reply."""
    llm = LlamaCpp(LlamaCpp.Config(avoid_words=["chatbot"]))
    assert len(llm.llm.tokenize(b" chatbot", add_bos=False)) > 1 and llm._avoid is None


def test_a_reply_never_says_an_avoided_word(shipped):
    question = "Can you help me with something?"
    before = reply(LlamaCpp(LlamaCpp.Config(avoid_words=[])), question)
    words = "|".join(shipped.cfg.avoid_words)
    assert re.search(rf"\b({words})\b", before, re.I), before  # what it says without them
    after = reply(shipped, question)
    assert after.strip() and not re.search(rf"\b({words})\b", after, re.I), after


def test_a_blank_avoided_word_is_refused_by_the_config():
    """A blank word would lower the space token itself: the config says so instead."""
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="avoid_words"):
        LlamaCpp.Config(avoid_words=["sorry", " "])
    assert LlamaCpp.Config(avoid_words=[" sorry "]).avoid_words == ["sorry"]
