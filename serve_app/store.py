"""Where conversations and segments live, so that any ingress replica serves any session and losing a
replica loses no conversation: SQLite on local disk (one machine, the default: no server to run) or
Redis (a cluster; Memorystore on GCP). One small async interface; `open_store` picks by config.

A conversation is stored whole (history, choices, the animator's continuity state) as one pickled
record, written when something in it changes (a turn ends, settings, an interruption). The store is
the service's own infrastructure: clients never reach it, so pickling our own objects is safe.
Failures of the store surface as `StoreUnavailable`, which the transports turn into 503, close 1013
or an `error` event; the next call tries again, so service resumes when the store comes back.
"""

from __future__ import annotations

import asyncio
import logging
import pickle
import sqlite3
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from avatar_core.config import AppConfig, LimitsConfig, StoreConfig
from serve_app.conversation import Conversation

log = logging.getLogger("ray.serve")


class StoreUnavailable(Exception):
    """The session store did not answer (down, unreachable, too slow)."""


class Store(ABC):
    def __init__(self, cfg: StoreConfig, limits: LimitsConfig):
        self.cfg, self.limits = cfg, limits

    @abstractmethod
    async def load(self, session_id: str) -> Conversation | None: ...

    @abstractmethod
    async def save(self, conv: Conversation) -> None: ...

    @abstractmethod
    async def put_segment(self, key: str, data: bytes, mime: str) -> None: ...

    @abstractmethod
    async def get_segment(self, key: str) -> tuple[bytes, str] | None: ...

    @abstractmethod
    async def ping(self) -> None:
        """Raises StoreUnavailable unless the store answers now."""

    async def close(self) -> None:
        pass


def _record(conv: Conversation) -> bytes:
    return pickle.dumps(conv.record(), protocol=pickle.HIGHEST_PROTOCOL)


def _conversation(blob: bytes) -> Conversation:
    return Conversation.from_record(pickle.loads(blob))


class SqliteStore(Store):
    """One database file in WAL mode, shared by the replicas of one machine; every call runs on one
    thread of its own, so the event loop never waits on the disk."""

    SCHEMA = """
        CREATE TABLE IF NOT EXISTS sessions (id TEXT PRIMARY KEY, record BLOB NOT NULL, updated REAL NOT NULL);
        CREATE INDEX IF NOT EXISTS sessions_updated ON sessions (updated);
        CREATE TABLE IF NOT EXISTS segments (key TEXT PRIMARY KEY, data BLOB NOT NULL, mime TEXT NOT NULL,
                                             size INTEGER NOT NULL, expires REAL NOT NULL);
        CREATE INDEX IF NOT EXISTS segments_expires ON segments (expires);
    """

    def __init__(self, cfg: StoreConfig, limits: LimitsConfig, path: Path, clock: Callable[[], float] = time.time):
        super().__init__(cfg, limits)
        self.path, self.clock = path, clock
        self.thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-store")
        self._db: sqlite3.Connection | None = None

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, timeout=self.cfg.timeout_s, isolation_level=None, check_same_thread=False)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.executescript(self.SCHEMA)
            self._db = db
        return self._db

    async def _run(self, fn, *args):
        try:
            return await asyncio.get_running_loop().run_in_executor(self.thread, fn, *args)
        except (sqlite3.Error, OSError) as exc:  # locked past timeout_s, disk full, path unusable
            raise StoreUnavailable(f"sqlite {self.path}: {exc}") from exc

    async def load(self, session_id: str) -> Conversation | None:
        def read():
            row = self._conn().execute(
                "SELECT record FROM sessions WHERE id = ? AND updated >= ?",
                (session_id, self.clock() - self.cfg.session_ttl_s),
            ).fetchone()
            return row[0] if row else None

        blob = await self._run(read)
        return _conversation(blob) if blob is not None else None

    async def save(self, conv: Conversation) -> None:
        blob, now = _record(conv), self.clock()

        def write():
            db = self._conn()
            with db:  # one transaction: the row, then the bounds (idle time, then count)
                db.execute("BEGIN IMMEDIATE")
                db.execute("INSERT OR REPLACE INTO sessions VALUES (?, ?, ?)", (conv.id, blob, now))
                db.execute("DELETE FROM sessions WHERE updated < ?", (now - self.cfg.session_ttl_s,))
                db.execute(
                    "DELETE FROM sessions WHERE id IN (SELECT id FROM sessions ORDER BY updated DESC LIMIT -1 OFFSET ?)",
                    (self.limits.sessions,),
                )

        await self._run(write)

    async def put_segment(self, key: str, data: bytes, mime: str) -> None:
        now = self.clock()

        def write():
            db = self._conn()
            with db:
                db.execute("BEGIN IMMEDIATE")
                db.execute("DELETE FROM segments WHERE expires < ?", (now,))
                db.execute(
                    "INSERT OR REPLACE INTO segments VALUES (?, ?, ?, ?, ?)",
                    (key, data, mime, len(data), now + self.limits.segment_ttl_s),
                )
                # the newest segments up to the byte bound stay; older ones go first
                db.execute(
                    "DELETE FROM segments WHERE key IN (SELECT key FROM (SELECT key, SUM(size) OVER "
                    "(ORDER BY expires DESC, rowid DESC) AS total FROM segments) WHERE total > ?)",
                    (self.limits.segment_cache_bytes,),
                )

        await self._run(write)

    async def get_segment(self, key: str) -> tuple[bytes, str] | None:
        def read():
            row = self._conn().execute(
                "SELECT data, mime FROM segments WHERE key = ? AND expires >= ?", (key, self.clock())
            ).fetchone()
            return (bytes(row[0]), row[1]) if row else None

        return await self._run(read)

    async def ping(self) -> None:
        await self._run(lambda: self._conn().execute("SELECT 1").fetchone())

    def stats(self) -> dict:
        """Rows and bytes held (tests, diagnostics); blocking, off the serving path."""
        db = self._conn()
        return {
            "sessions": db.execute("SELECT COUNT(*) FROM sessions").fetchone()[0],
            "segment_bytes": db.execute("SELECT COALESCE(SUM(size), 0) FROM segments").fetchone()[0],
        }

    async def close(self) -> None:
        if self._db is not None:
            await asyncio.get_running_loop().run_in_executor(self.thread, self._db.close)
            self._db = None
        self.thread.shutdown(wait=False)


class RedisStore(Store):
    """Keys `<prefix>session:<id>` (the record) and `<prefix>segment:<key>` (mime, a newline, the
    bytes), each with its time to live. Bound the memory with the server's own `maxmemory` and
    `maxmemory-policy volatile-ttl` (every key here expires; the nearest to expiry goes first)."""

    def __init__(self, cfg: StoreConfig, limits: LimitsConfig):
        super().__init__(cfg, limits)
        self._client = None

    @property
    def client(self):
        if self._client is None:  # made in the replica's event loop, on first use
            import redis.asyncio as redis

            self._client = redis.Redis.from_url(
                self.cfg.url, socket_timeout=self.cfg.timeout_s, socket_connect_timeout=self.cfg.timeout_s
            )
        return self._client

    async def _run(self, call):
        import redis

        try:
            return await call
        except (redis.RedisError, OSError) as exc:
            raise StoreUnavailable(f"redis {self.cfg.url}: {exc}") from exc

    def _key(self, kind: str, key: str) -> str:
        return f"{self.cfg.key_prefix}{kind}:{key}"

    async def load(self, session_id: str) -> Conversation | None:
        blob = await self._run(self.client.get(self._key("session", session_id)))
        return _conversation(blob) if blob is not None else None

    async def save(self, conv: Conversation) -> None:
        ttl = max(1, round(self.cfg.session_ttl_s))
        await self._run(self.client.set(self._key("session", conv.id), _record(conv), ex=ttl))

    async def put_segment(self, key: str, data: bytes, mime: str) -> None:
        if len(data) > self.limits.segment_cache_bytes:
            log.warning("segment %s (%d bytes) exceeds limits.segment_cache_bytes: not kept", key, len(data))
            return
        ttl = max(1, round(self.limits.segment_ttl_s))
        await self._run(self.client.set(self._key("segment", key), mime.encode() + b"\n" + data, ex=ttl))

    async def get_segment(self, key: str) -> tuple[bytes, str] | None:
        blob = await self._run(self.client.get(self._key("segment", key)))
        if blob is None:
            return None
        mime, _, data = blob.partition(b"\n")
        return data, mime.decode()

    async def ping(self) -> None:
        await self._run(self.client.ping())

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None


def open_store(cfg: AppConfig) -> Store:
    store = cfg.store
    if store.backend == "redis":
        return RedisStore(store, cfg.limits)
    return SqliteStore(store, cfg.limits, store.path or cfg.storage.dir / "state.sqlite3")
