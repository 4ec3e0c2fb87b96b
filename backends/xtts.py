"""TTS with Coqui XTTS-v2 (`coqui-tts`, the maintained fork; import name `TTS`): speaks in the voice of
a short reference clip, streamed in chunks as the model makes them. The production voice, for GPUs.

Loaded the way its maintainers document it, from the released files on disk (nothing is downloaded):
`Xtts(config)` (what `Xtts.init_from_config`, deprecated in 0.28, does) + `load_checkpoint(config,
checkpoint_dir=..., use_deepspeed=...)`. A voice's
conditioning latents (`get_conditioning_latents`: the GPT's style latents and the speaker embedding)
are computed once per voice id and kept in a per-replica LRU, so a sentence never pays for speaker
encoding. Each sentence streams from `inference_stream(..., enable_text_splitting=False)` (the ingress
already cut the reply into sentences) on a worker thread, and every 24 kHz chunk is passed on as it
comes; a cancelled turn stops the generator at the next chunk.

The XTTS-v2 weights are under the Coqui Public Model Licence (non-commercial): the operator fetches
and accepts them (docs/gpu.md, "XTTS-v2 (TTS)"). Here only the model's real code runs, on CPU, with a
tiny randomly initialised checkpoint (tests/test_xtts.py). torch and TTS come with the `gpu` extra and
are imported only inside this class's methods.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from contextlib import aclosing
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import Field

from avatar_core.config import ASSETS, TtsConfig
from avatar_core.media import MediaError, decode_audio
from avatar_core.protocols import SpeechBackend
from avatar_core.registry import register
from avatar_core.threads import iterate_in_thread, run_in_thread
from avatar_core.types import ClientError, Speech

# XTTS-v2's languages (its config.json `languages`), as the project's ISO 639-1 codes: "zh-cn" -> "zh";
# inference_stream drops the region and the tokenizer maps "zh" back.
XTTS_V2_LANGUAGES = frozenset("en es fr de it pt pl tr ru nl cs ar zh hu ko ja hi".split())
CHECKPOINT_FILES = ("config.json", "model.pth", "vocab.json")  # speakers_xtts.pth is optional
SILENT_PEAK = 10 ** (-50 / 20)  # a clip whose loudest sample is below -50 dBFS holds no voice


@register("tts", "xtts")
class Xtts(SpeechBackend):
    class Config(TtsConfig):
        backend: Literal["xtts"] = "xtts"
        checkpoint_dir: Path = Field(
            description="the released XTTS-v2 files: config.json, model.pth, vocab.json "
            "(and speakers_xtts.pth); never downloaded at run time"
        )
        device: Literal["cuda", "cpu"] = "cuda"
        use_deepspeed: bool = Field(False, description="DeepSpeed inference kernels (GPU, needs deepspeed)")
        stream_chunk_size: int = Field(20, ge=1, description="GPT tokens per streamed chunk (fewer: sooner)")
        overlap_wav_len: int = Field(1024, ge=1, description="samples cross-faded between chunks")
        temperature: float = Field(0.75, gt=0.0, le=2.0)
        speed: float = Field(1.0, ge=0.25, le=4.0)
        max_chars: int = Field(250, ge=1, description="XTTS-v2's own limit for English; longer text is cut")
        latent_cache_size: int = Field(64, ge=1, description="voices whose latents a replica keeps (LRU)")
        default_voice: Path = Field(
            ASSETS / "voices" / "jfk.wav", description="the reference clip of voice_id 'default'"
        )

    max_concurrency: ClassVar[int] = 1  # one engine streams one sentence at a time
    clones_voices: ClassVar[bool] = True
    default_voice_name: ClassVar[str] = "JFK, 1961 (built-in)"

    def __init__(self, cfg: Config):
        try:
            import torch
            from cachetools import LRUCache
            from TTS.tts.configs.xtts_config import XttsConfig
            from TTS.tts.models.xtts import Xtts as XttsModel
        except ImportError as exc:
            raise RuntimeError(
                f"the xtts backend needs the 'gpu' extra (coqui-tts, torch): pip install '.[gpu]' ({exc})"
            ) from exc
        missing = [name for name in CHECKPOINT_FILES if not (cfg.checkpoint_dir / name).is_file()]
        if missing:
            raise FileNotFoundError(
                f"xtts: {cfg.checkpoint_dir} lacks {', '.join(missing)}; put the released XTTS-v2 files "
                "there (see docs/gpu.md, \"XTTS-v2 (TTS)\")"
            )
        if cfg.device == "cuda" and not torch.cuda.is_available():
            raise RuntimeError("xtts: device is 'cuda' but torch sees no CUDA GPU (device: cpu runs slowly)")
        self.cfg = cfg
        config = XttsConfig()
        config.load_json(str(cfg.checkpoint_dir / "config.json"))
        self.model = XttsModel(config)  # coqui-tts 0.28 deprecates Xtts.init_from_config(config) for this
        self.model.load_checkpoint(config, checkpoint_dir=str(cfg.checkpoint_dir), use_deepspeed=cfg.use_deepspeed)
        self.model.to(cfg.device)
        self.sample_rate = config.model_args.output_sample_rate  # 24 kHz
        self.latents: Any = LRUCache(maxsize=cfg.latent_cache_size)  # voice id -> (gpt latent, speaker)
        self.engine = asyncio.Lock()  # a health probe never runs beside a sentence
        self.voices: dict[str, dict] = {}  # voice id -> clip, computed, used: the stage's evidence
        self.counts: Counter = Counter()  # chunks made, streams completed or stopped, per language

    @classmethod
    def languages(cls, cfg: Config) -> frozenset[str]:
        """The checkpoint's own list when its config.json is readable, else XTTS-v2's."""
        try:
            listed = json.loads((cfg.checkpoint_dir / "config.json").read_text())["languages"]
        except (OSError, KeyError, ValueError):
            return XTTS_V2_LANGUAGES
        return frozenset(code.split("-")[0] for code in listed)

    async def stream(self, text: str, voice_wav: str | None, voice_id: str, language: str) -> AsyncIterator[Speech]:
        """The sentence in the voice's chunks as inference_stream yields them."""
        async with self.engine:
            gpt_latent, speaker = await self.conditioning(voice_wav, voice_id)
            self.counts[f"language:{language}"] += 1
            finished = False
            # aclosing: a consumer that stops early closes the thread's iterator now, which waits for
            # the worker to see the stop flag (at its next chunk) and end, before the lock is free
            chunks = aclosing(iterate_in_thread(lambda: self._chunks(text, language, gpt_latent, speaker)))
            try:
                async with chunks as pcms:
                    async for pcm in pcms:
                        yield Speech(pcm, self.sample_rate)
                finished = True
            finally:
                self.counts["streams_completed" if finished else "streams_stopped"] += 1

    def _chunks(self, text: str, language: str, gpt_latent, speaker) -> Iterator[np.ndarray]:
        cfg = self.cfg
        for wav in self.model.inference_stream(
            text,
            language,
            gpt_latent,
            speaker,
            stream_chunk_size=cfg.stream_chunk_size,
            overlap_wav_len=cfg.overlap_wav_len,
            temperature=cfg.temperature,
            speed=cfg.speed,
            enable_text_splitting=False,
        ):
            self.counts["chunks"] += 1
            yield np.clip(wav.detach().float().cpu().numpy(), -1.0, 1.0)

    async def conditioning(self, voice_wav: str | None, voice_id: str) -> tuple[Any, Any]:
        """A voice's latents: from the LRU, or computed once from its clip (the default voice's is
        the shipped clip). A clip XTTS cannot condition on raises ClientError('unusable_voice')."""
        if voice_id in self.latents:
            self.voices[voice_id]["used"] += 1
            return self.latents[voice_id]
        clip = voice_wav or str(self.cfg.default_voice)
        latents = await run_in_thread(self._condition, clip)
        self.latents[voice_id] = latents
        row = self.voices.setdefault(voice_id, {"clip": clip, "computed": 0, "used": 0})
        row["computed"] += 1  # again only if the LRU dropped it
        row["used"] += 1
        return latents

    def _condition(self, clip: str) -> tuple[Any, Any]:
        import torch

        unusable = "the voice clip cannot be used for voice cloning"
        try:
            pcm = decode_audio(Path(clip).read_bytes(), 600, rate=self.sample_rate)
        except (OSError, MediaError) as exc:
            raise ClientError("unusable_voice", f"{unusable}: {exc}") from None
        if np.abs(pcm).max() < SILENT_PEAK:
            raise ClientError("unusable_voice", f"{unusable}: it is silent; upload a few seconds of clear speech")
        try:
            gpt_latent, speaker = self.model.get_conditioning_latents(audio_path=[clip])
        except torch.OutOfMemoryError:
            raise
        except (RuntimeError, ValueError) as exc:  # e.g. XTTS's "reference audio too short"
            raise ClientError("unusable_voice", f"{unusable}: {exc}") from None
        if not (torch.isfinite(gpt_latent).all() and torch.isfinite(speaker).all()):
            raise ClientError("unusable_voice", f"{unusable}: XTTS found no voice in it")
        return gpt_latent, speaker

    def stats(self) -> dict:
        """The replica's voices (which clip, latents computed how often, used by how many
        sentences), those in the LRU now, and its stream counts."""
        return {
            "voices": {voice: dict(row) for voice, row in self.voices.items()},
            "cached": list(self.latents.keys()),
            **self.counts,
        }

    async def probe(self) -> None:
        """One short sentence in the default voice: also computes its latents before any turn."""
        async for _ in self.stream("Hello there.", None, "default", "en"):
            pass
