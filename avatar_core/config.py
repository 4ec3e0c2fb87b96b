"""Every setting of the application, typed, in one place.

`serve_config.yaml` passes `args` to the builder, which validates them into `AppConfig`; each stage
deployment receives only its own section. A stage's section names its backend (`backend: piper`)
and holds that backend's fields, whose model lives with the backend in `backends/`; the stage bases
below hold what every backend of a stage shares. Defaults are the embedded (CPU, no download)
backends.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, SerializeAsAny, model_validator

from avatar_core import registry
from avatar_core.registry import BackendConfig


def shipped(name: str) -> Path:
    """A data directory the project ships beside its packages (`assets`, `ui`): a checkout's own (the
    repository, or an editable install of it), else where an installed wheel put it (pyproject's
    data-files: `<prefix>/share/talking-avatar/<name>`, found through the distribution's RECORD)."""
    root = Path(__file__).resolve().parent.parent
    if (root / "pyproject.toml").is_file():
        return root / name
    from importlib import metadata

    placed = next(f for f in metadata.files("talking-avatar") or [] if f"share/talking-avatar/{name}/" in f.as_posix())
    found = Path(placed.locate()).resolve()
    while found.name != name:
        found = found.parent
    return found


ASSETS = shipped("assets")


def model_cache() -> Path:
    """Where the install scripts put what they fetch or build once, outside the checkout (the
    llama.cpp wheel, models joined from PyPI parts, the turn model, the vLLM conversion): the XDG
    cache, as pip and the scripts in scripts/ use it."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "talking-avatar"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class AsrConfig(BackendConfig):
    """What every ASR backend has; backends add their own fields (`backends/`)."""


LANGUAGE_NAMES = {
    "en": "English", "es": "Spanish", "fr": "French", "de": "German", "it": "Italian",
    "pt": "Portuguese", "pl": "Polish", "tr": "Turkish", "ru": "Russian", "nl": "Dutch",
    "cs": "Czech", "ar": "Arabic", "zh": "Chinese", "ja": "Japanese", "hu": "Hungarian",
    "ko": "Korean", "hi": "Hindi",
}


class LlmConfig(BackendConfig):
    """What every LLM backend has. The conversation (system prompt, history, language) is the
    ingress's: it builds the messages, so every backend, ours or Ray's vLLM server, sees the same."""

    # Chosen on benchmarks/conversation.py (docs/backends.md, "LLM"): one or two sentences, the answer
    # first, worked examples in prose (a "User: ... You: ..." transcript made small models parrot it);
    # evaluated once per replica with llama.cpp's prefix cache.
    system_prompt: str = (
        "You are a friendly talking avatar in a spoken conversation. Reply in one or two short sentences, "
        "as you would say them aloud. If the user asks something, answer it directly and correctly, with "
        "the name or the number in your answer. If the user tells you something, reply warmly to what they "
        "said. What the user said earlier is true: use it when they ask about it. Do not use lists, markdown "
        "or emoji. For example, asked what the capital of Germany is, you say: The capital of Germany is "
        "Berlin. Asked what six plus three is, you say: Six plus three is nine. Told \"I have a new bike\", "
        "you say: How exciting, enjoy riding it!"
    )
    max_tokens: int = Field(120, ge=1, le=2048)
    temperature: float = Field(0.0, ge=0.0, le=2.0, description="0: greedy, the reply the benchmarks measured")
    history_turns: int = Field(6, ge=0, description="user/assistant pairs kept per conversation")
    worked_sums: bool = Field(
        True, description="a sum the user asks in English (\"ten minus three\") is worked out and given to the model "
        "beside the question, as a calculator's line (serve_app/worked_sums.py): small models cannot add",
    )

    def system_message(self, language: str) -> str:
        """The system message of a conversation in `language` (a code): the prompt and a language line."""
        return f"{self.system_prompt} Always answer in {LANGUAGE_NAMES.get(language, language)}."


class TtsConfig(BackendConfig):
    max_chars: int = Field(400, ge=1, description="longest sentence sent to TTS in one call")
    piece_growth: float | None = Field(
        1.0, gt=0, description="a later piece of the reply may end at a clause boundary once it is this many times "
        "as long as the reply before it, so it is spoken before those have played (serve_app/sentences.py); "
        "null: only at a sentence's end",
    )


class AnimatorConfig(BackendConfig):
    avatar_image: Path = ASSETS / "avatars" / "astronaut.png"
    fps: int = 25
    audio_rate: int = Field(24_000, description="sample rate of the AAC track in every fragment")
    crf: int = Field(23, ge=0, le=51)
    first_fragment_s: float = Field(
        0.4, gt=0, le=30, description="the turn's first fragment: short, since it gates the first frame"
    )
    fragment_s: float = Field(1.0, gt=0, le=30, description="later fragments (fewer, larger files)")
    fragment_growth: float | None = Field(
        2.0, ge=1, description="each of a piece's fragments at most this many times as long as the one before "
        "(up to fragment_s), so each can be made while the one before plays; null: straight to fragment_s",
    )


def _stage_section(stage: str):
    """A stage's config: validated by the model of the backend it names, serialised in full."""
    return SerializeAsAny[
        Annotated[BackendConfig, BeforeValidator(lambda value: registry.parse(stage, value))]
    ]


class LimitsConfig(_Strict):
    max_upload_bytes: int = Field(
        20 * 1024 * 1024,
        description="largest audio upload (HTTP) or binary message (WebSocket); the proxy itself "
        "closes WebSocket messages over 16 MiB (uvicorn's ws_max_size) with code 1009",
    )
    max_text_bytes: int = Field(4096, ge=64, description="longest WebSocket text (JSON) message")
    max_audio_s: float = Field(60.0, gt=0, description="longest audio a turn accepts (an utterance, an upload)")
    stage_timeout_s: float = Field(
        60.0, gt=0, description="a stage call, or the wait for a streaming stage's next item, fails after this"
    )
    sessions: int = Field(
        10_000, ge=1, description="conversations the SQLite store keeps (the least recently written go first)"
    )
    segment_cache_bytes: int = Field(
        256 * 1024 * 1024, ge=0, description="segment bytes kept for HTTP clients (GET /api/v1/segments/{id})"
    )
    segment_ttl_s: float = Field(600.0, gt=0, description="how long a segment stays fetchable")


class AdmissionConfig(_Strict):
    """Concurrency caps at the ingress: beyond them a client is refused at once (HTTP 503 with
    Retry-After, WebSocket close 1013) so that the sessions already admitted keep their latency."""

    max_sessions: int = Field(64, ge=0, description="open WebSocket sessions")
    max_turns: int = Field(8, ge=0, description="turns running at once, HTTP and WebSocket")
    max_sessions_per_client: int = Field(4, ge=0, description="open WebSocket sessions per client IP")
    max_turns_per_client: int = Field(2, ge=0, description="turns running at once per client IP")
    retry_after_s: int = Field(2, ge=0, description="the Retry-After a refused HTTP client gets")


class SecurityConfig(_Strict):
    auth_token: str | None = Field(
        None,
        description="if set, every request but /healthz and the static page (/, /ui/*) needs "
        "'Authorization: Bearer <token>' "
        "(WebSocket: the header or ?access_token=<token>, since browsers cannot set headers)",
    )
    ws_allowed_origins: list[str] | None = Field(
        None,
        description="Origins allowed to open /ws; None = same host only ('*' = any). Clients that "
        "send no Origin (not browsers) are allowed",
    )
    cors_allow_origins: list[str] = Field(
        default_factory=list, description="CORS allow-list for the HTTP API (empty = CORS off)"
    )
    cors_allow_credentials: bool = False


class StorageConfig(_Strict):
    """Uploaded avatars and voices, stored under content-hash names that clients never choose.
    Every replica must see the same directory (one node, or a shared volume)."""

    dir: Path = Field(
        Path(tempfile.gettempdir()) / "talking-avatar", description="a shared volume on a cluster"
    )
    max_image_bytes: int = Field(10 * 1024 * 1024, description="largest avatar upload")
    max_image_pixels: int = Field(25_000_000, description="checked from the header, before decoding")
    max_image_side: int = Field(1024, description="larger avatars are scaled down on upload")
    min_voice_s: float = Field(2.0, description="shortest voice clip accepted for cloning")
    max_voice_s: float = Field(30.0, description="longest voice clip accepted for cloning")


class EndpointingConfig(_Strict):
    """Server-side end-of-utterance detection for hands-free streaming: Silero VAD finds speech and
    pauses; at each pause the turn model (Smart Turn v3.2) says whether the speaker is done."""

    turn_model: Literal["smart-turn", "none"] = Field(
        "smart-turn", description="none: every pause of end_silence_s ends the utterance"
    )
    turn_model_path: Path | None = Field(
        None, description="the Smart Turn ONNX file; None: where scripts/fetch_smart_turn.sh puts it"
    )
    turn_threshold: float = Field(0.5, gt=0.0, lt=1.0, description="the model's P(complete) that ends a turn")
    turn_silence_s: float = Field(
        0.2, gt=0.0, description="silence after which the model is asked; 'complete' ends the utterance then"
    )
    incomplete_silence_s: float = Field(
        2.0, gt=0.0, description="silence that ends an utterance the model called incomplete"
    )
    transcribe_silence_s: float = Field(
        0.1, gt=0.0, description="silence after which the speech so far is transcribed (speculatively, "
        "for the words and the turn), so that the words are ready when the turn model is asked at "
        "turn_silence_s; an ASR call wasted where the speaker goes on sooner; at most turn_silence_s",
    )
    words: bool = Field(
        True, description="end of turn from sound and words together: the speech so far is transcribed at "
        "each pause (the turn reuses it); plainly unfinished words keep listening, a finished sentence ends "
        "the turn even when the turn model hesitates (serve_app/turn_taking.py); false: the turn model alone",
    )
    resume_s: float = Field(
        1.5, ge=0.0, description="speech this soon after an utterance that ended at a pause continues it: "
        "the reply, even one already begun, is withdrawn and the whole utterance answered once",
    )
    threshold: float = Field(0.5, gt=0.0, lt=1.0, description="speech probability that starts speech")
    neg_threshold: float = Field(0.35, gt=0.0, lt=1.0, description="below this, speech has paused")
    min_speech_s: float = Field(0.25, ge=0.0, description="shorter bursts are noise, not a turn")
    end_silence_s: float = Field(0.7, gt=0.0, description="silence that ends an utterance (turn_model: none)")
    pre_roll_s: float = Field(0.3, ge=0.0, description="audio kept from before speech started")
    max_utterance_s: float = Field(30.0, gt=1.0, description="an utterance is cut here and sent")

    @model_validator(mode="after")
    def _pauses_in_order(self) -> "EndpointingConfig":
        if self.incomplete_silence_s < self.turn_silence_s:
            raise ValueError("incomplete_silence_s must be at least turn_silence_s")
        if self.resume_s > self.incomplete_silence_s:  # the endpointer keeps the pause's audio that long
            raise ValueError("resume_s must be at most incomplete_silence_s")
        return self


class StoreConfig(_Strict):
    """Where conversations and segments live (`serve_app/store.py`), so that any ingress replica
    serves any session and a restart loses none: SQLite on local disk for one machine, Redis for a
    cluster."""

    backend: Literal["sqlite", "redis"] = "sqlite"
    path: Path | None = Field(None, description="sqlite: the database file; None: <storage.dir>/state.sqlite3")
    url: str = Field("redis://127.0.0.1:6379/0", description="redis: the server (Memorystore on GCP)")
    key_prefix: str = Field("avatar:", description="redis: prefix of every key")
    session_ttl_s: float = Field(
        7 * 24 * 3600.0, gt=0, description="a conversation not written for this long is forgotten"
    )
    timeout_s: float = Field(
        2.0, gt=0, description="a store call slower than this fails: the client hears store_unavailable"
    )


class SessionConfig(_Strict):
    idle_segment_s: float = Field(1.0, gt=0.0, le=5.0, description="listening video sent per request")


class AppConfig(_Strict):
    asr: _stage_section("asr") = Field(default_factory=lambda: registry.parse("asr", {}))
    llm: _stage_section("llm") = Field(default_factory=lambda: registry.parse("llm", {}))
    tts: _stage_section("tts") = Field(default_factory=lambda: registry.parse("tts", {}))
    animator: _stage_section("animator") = Field(default_factory=lambda: registry.parse("animator", {}))
    limits: LimitsConfig = LimitsConfig()
    admission: AdmissionConfig = AdmissionConfig()
    security: SecurityConfig = SecurityConfig()
    storage: StorageConfig = StorageConfig()
    endpointing: EndpointingConfig = EndpointingConfig()
    session: SessionConfig = SessionConfig()
    store: StoreConfig = StoreConfig()

    @model_validator(mode="after")
    def _backends_share_a_language(self) -> "AppConfig":
        self.languages()
        return self

    def backend(self, stage: str) -> type:
        """The class of the backend that `stage`'s section names."""
        return registry.backend_class(stage, getattr(self, stage))

    def languages(self) -> list[str]:
        """What the configured backends support together (ASR, LLM and TTS must all handle it),
        English first: an English-only recogniser gives ["en"], whatever the other stages know."""
        common: frozenset[str] | None = None
        for stage in registry.STAGES:
            mine = self.backend(stage).languages(getattr(self, stage))
            if mine is not None:
                common = mine if common is None else common & mine
        if common is None:
            return ["en"]
        if not common:
            raise ValueError("the configured ASR, LLM and TTS backends have no language in common")
        return sorted(common, key=lambda code: (code != "en", code))
