"""The session store on its real engines: SQLite files and a real redis-server. What a conversation
carries survives a round trip; the bounds hold (sessions by recency and idle time, segments by bytes
and age); two stores on one file share it (replicas on one machine); a store that goes away fails
with StoreUnavailable and works again when it comes back."""

import asyncio

import numpy as np
import pytest

from avatar_core.config import AppConfig, LimitsConfig, StoreConfig
from backends.procedural.state import AnimState
from serve_app.conversation import Conversation
from serve_app.store import RedisStore, SqliteStore, StoreUnavailable, open_store
from tests.redis_server import redis_server


def conversation(session_id: str = "s1") -> Conversation:
    conv = Conversation(id=session_id, avatar_id="a1b2", voice_id="v9", language="en")
    conv.remember("what is the capital of france", "Paris is the capital of France.", "turn-1")
    conv.anim_state = AnimState(frame=42, open=0.3, tail=np.arange(5, dtype=np.float32))
    return conv


def same(a: Conversation, b: Conversation) -> None:
    assert (b.id, b.history, b.avatar_id, b.voice_id, b.language, b.last_turn) == (
        a.id, a.history, a.avatar_id, a.voice_id, a.language, "turn-1")
    assert b.anim_state.frame == 42 and np.array_equal(b.anim_state.tail, a.anim_state.tail)


class Clock:
    def __init__(self):
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def sqlite(tmp_path, clock=None, **limits) -> SqliteStore:
    cfg = StoreConfig(session_ttl_s=3600)
    return SqliteStore(cfg, LimitsConfig(**limits), tmp_path / "state.sqlite3", clock=clock or Clock())


def test_sqlite_keeps_a_conversation_whole(tmp_path):
    async def go():
        store = sqlite(tmp_path)
        assert await store.load("s1") is None
        await store.save(conversation())
        got = await store.load("s1")
        await store.close()
        return got

    same(conversation(), asyncio.run(go()))


def test_sqlite_forgets_the_least_recently_written_and_the_idle(tmp_path):
    clock = Clock()

    async def go():
        store = sqlite(tmp_path, clock, sessions=3)
        for sid in ("a", "b", "c"):
            await store.save(Conversation(id=sid))
            clock.now += 1
        await store.save(Conversation(id="a"))  # written again: b is now the oldest
        clock.now += 1
        await store.save(Conversation(id="d"))
        kept = [sid for sid in "abcd" if await store.load(sid) is not None]
        clock.now += 3600 - 0.5  # now 4603.5: a (written at 1003) is past the idle limit, d (1004) is not
        left = [sid for sid in "acd" if await store.load(sid) is not None]
        await store.close()
        return kept, left

    kept, left = asyncio.run(go())
    assert kept == ["a", "c", "d"]
    assert left == ["d"]


def test_sqlite_segments_keep_the_newest_within_the_byte_bound_and_expire(tmp_path):
    clock = Clock()

    async def go():
        store = sqlite(tmp_path, clock, segment_cache_bytes=10, segment_ttl_s=60)
        for key in ("t-0", "t-1", "t-2"):
            await store.put_segment(key, b"1234", "video/mp4")
            clock.now += 1
        first = [await store.get_segment(k) for k in ("t-0", "t-1", "t-2")]
        held = store.stats()["segment_bytes"]
        clock.now += 58.5  # t-1 was kept at 1001 (expires 1061), t-2 at 1002
        later = [await store.get_segment(k) for k in ("t-1", "t-2")]
        await store.close()
        return first, held, later

    first, held, later = asyncio.run(go())
    assert first == [None, (b"1234", "video/mp4"), (b"1234", "video/mp4")]
    assert held == 8
    assert later == [None, (b"1234", "video/mp4")]


def test_two_stores_on_one_file_share_it(tmp_path):
    """Two ingress replicas on one machine: what one writes, the other reads."""

    async def go():
        one, two = sqlite(tmp_path), sqlite(tmp_path)
        await one.save(conversation("shared"))
        await two.put_segment("x-0", b"media", "video/mp4")
        got = await two.load("shared"), await one.get_segment("x-0")
        await one.close()
        await two.close()
        return got

    conv, segment = asyncio.run(go())
    same(conversation("shared"), conv)
    assert segment == (b"media", "video/mp4")


def test_sqlite_that_cannot_be_written_is_unavailable(tmp_path):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the database's directory should be")

    async def go():
        store = SqliteStore(StoreConfig(), LimitsConfig(), blocker / "state.sqlite3")
        with pytest.raises(StoreUnavailable, match="sqlite"):
            await store.save(conversation())
        with pytest.raises(StoreUnavailable):
            await store.ping()

    asyncio.run(go())


def test_open_store_follows_the_config(tmp_path):
    cfg = AppConfig.model_validate({"storage": {"dir": str(tmp_path)}})
    store = open_store(cfg)
    assert isinstance(store, SqliteStore) and store.path == tmp_path / "state.sqlite3"
    redis_cfg = AppConfig.model_validate({"store": {"backend": "redis", "url": "redis://10.0.0.5:6379/2"}})
    assert isinstance(open_store(redis_cfg), RedisStore)
    with pytest.raises(ValueError, match="backend"):
        AppConfig.model_validate({"store": {"backend": "postgres"}})


@pytest.fixture(scope="module")
def redis():
    with redis_server() as server:
        yield server


def redis_store(server, **limits) -> RedisStore:
    return RedisStore(StoreConfig(backend="redis", url=server.url, session_ttl_s=3600, timeout_s=1), LimitsConfig(**limits))


def test_redis_keeps_a_conversation_and_segments_with_their_lifetimes(redis):
    async def go():
        store = redis_store(redis, segment_ttl_s=90)
        await store.save(conversation("r1"))
        await store.put_segment("r-0", b"\x00media\nbytes", "video/mp4")
        got = await store.load("r1"), await store.get_segment("r-0"), await store.get_segment("r-9")
        ttls = await store.client.ttl("avatar:session:r1"), await store.client.ttl("avatar:segment:r-0")
        await store.close()
        return got, ttls

    (conv, segment, missing), (session_ttl, segment_ttl) = asyncio.run(go())
    same(conversation("r1"), conv)
    assert segment == (b"\x00media\nbytes", "video/mp4") and missing is None
    assert 3500 < session_ttl <= 3600 and 0 < segment_ttl <= 90


def test_redis_down_is_unavailable_and_back_works_again():
    with redis_server() as server:

        async def go():
            store = redis_store(server)
            await store.save(conversation("r2"))
            server.stop()
            with pytest.raises(StoreUnavailable, match="redis"):
                await store.load("r2")
            with pytest.raises(StoreUnavailable):
                await store.ping()
            server.start()  # an empty server on the same port: a new store, not a restored one
            await store.ping()
            await store.save(conversation("r3"))
            got = await store.load("r3")
            await store.close()
            return got

        same(conversation("r3"), asyncio.run(go()))
