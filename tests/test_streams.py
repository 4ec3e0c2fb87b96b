"""A reply's tokens leave coalesced (avatar_core/streams.py): the first at once, then what came meanwhile."""

import asyncio

import pytest

from avatar_core.streams import coalesced


async def collect(stream) -> list[str]:
    return [item async for item in stream]


def test_the_first_token_goes_alone_and_a_burst_after_it_goes_as_one_item():
    async def main():
        first_seen = asyncio.Event()

        async def tokens():
            yield "Mount "
            await first_seen.wait()  # the rest is written only once the first has been received
            for token in ["Everest ", "is ", "tallest."]:
                yield token

        got = []
        async for item in coalesced(tokens(), 0.05):
            got.append(item)
            first_seen.set()
        return got

    assert asyncio.run(main()) == ["Mount ", "Everest is tallest."]


def test_without_an_interval_every_token_is_its_own_item():
    async def tokens():
        for token in ["a", "b", "c"]:
            await asyncio.sleep(0)
            yield token

    assert asyncio.run(collect(coalesced(tokens(), 0))) == ["a", "b", "c"]


def test_a_failing_stream_gives_what_came_before_the_error_then_the_error():
    async def tokens():
        yield "Hello "
        yield "there"
        raise RuntimeError("the model failed")

    async def main():
        got = []
        with pytest.raises(RuntimeError, match="the model failed"):
            async for item in coalesced(tokens(), 0.01):
                got.append(item)
        return got

    assert "".join(asyncio.run(main())) == "Hello there"


def test_a_consumer_that_stops_early_closes_the_source():
    closed = []

    async def tokens():
        try:
            while True:
                yield "token "
                await asyncio.sleep(0)
        finally:
            closed.append(True)

    async def main():
        stream = coalesced(tokens(), 0.01)
        first = await anext(stream)
        await stream.aclose()
        return first

    assert asyncio.run(main()).startswith("token ")
    assert closed == [True]


def test_the_embedded_llm_sends_the_same_reply_in_fewer_items():
    pytest.importorskip("llama_cpp")
    from backends.llama_cpp import LlamaCpp

    messages = [{"role": "user", "content": "Name three colours of the rainbow."}]

    async def items(interval_ms: float) -> list[str]:
        llm = LlamaCpp(LlamaCpp.Config(stream_batching_interval_ms=interval_ms))
        return [d async for d in llm.chat(messages, 24, 0.0)]

    tokens, batched = asyncio.run(items(0)), asyncio.run(items(2000))
    assert len(tokens) > 2 and "".join(batched) == "".join(tokens)  # greedy: the same words
    assert batched[0] == tokens[0]  # the first token is not held back
    assert len(batched) < len(tokens)  # the rest is written within the interval: coalesced
