"""Smart Turn v3.2 (Pipecat, BSD-2-Clause): is the speaker done, judged from how the last 8 s sound.

The endpointer asks it once per pause. Its input is what Pipecat's `local_smart_turn_v3.py` gives
it: the last 8 s of 16 kHz audio, zero-padded at the start, normalised to zero mean and unit
variance, as 80-bin Whisper log-mel features (800 frames). faster-whisper's `FeatureExtractor`
computes those features (checked against Pipecat's own front end: 7e-6 apart at most on jfk.flac);
the model's one output is the probability that the turn is complete.

The model file is taken from the `pipecat-ai` wheel by `scripts/fetch_smart_turn.sh` (run by
`scripts/install.sh`), not installed with pipecat-ai, whose dependencies (numba, openai, aiohttp,
...) the app does not need. Provenance and licence: docs/architecture.md, "Turn-taking"; the script
copies the wheel's LICENSE beside the model.
"""

from __future__ import annotations

import functools
import hashlib
import threading
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from cachetools import LRUCache

if TYPE_CHECKING:
    from avatar_core.config import EndpointingConfig

RATE = 16_000
WINDOW_S = 8
MODEL_FILE = "smart-turn-v3.2-cpu.onnx"


def default_path() -> Path:
    """Where scripts/fetch_smart_turn.sh puts the model (beside the llama.cpp wheel cache)."""
    from avatar_core.config import model_cache

    return model_cache() / "smart-turn" / MODEL_FILE


def for_config(cfg: "EndpointingConfig") -> "SmartTurn | None":
    """The configured turn model (loaded once per process), or None for the plain silence timer."""
    if cfg.turn_model == "none":
        return None
    return SmartTurn.load(cfg.turn_model_path or default_path())


class SmartTurn:
    """One ONNX session per process and model file, shared by every session's endpointer
    (onnxruntime's `run` is thread-safe). One intra-op thread: a decision takes tens of ms.

    The last verdicts are kept by the audio they judged, so a pause foreseen while its words were
    awaited (`Endpointer.foresee`) is judged once: the real push finds the verdict ready."""

    def __init__(self, path: Path):
        import onnxruntime as ort
        from faster_whisper.feature_extractor import FeatureExtractor

        if not path.is_file():
            raise FileNotFoundError(
                f"the Smart Turn model is not at {path}: run scripts/fetch_smart_turn.sh (scripts/install.sh "
                "does), or set endpointing.turn_model: none to end utterances on silence alone"
            )
        options = ort.SessionOptions()
        options.intra_op_num_threads = options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.features = FeatureExtractor(feature_size=80, sampling_rate=RATE, chunk_length=WINDOW_S)
        self._verdicts: LRUCache = LRUCache(256)  # by the digest of the audio judged
        self._lock = threading.Lock()

    @classmethod
    @functools.cache
    def load(cls, path: Path) -> "SmartTurn":
        return cls(path)

    def probability(self, pcm: np.ndarray) -> float:
        """P(the turn is complete) for 16 kHz mono float audio that ends now."""
        n = WINDOW_S * RATE
        audio = np.ascontiguousarray(np.asarray(pcm, np.float32)[-n:])
        key = (len(audio), hashlib.blake2b(audio.data, digest_size=16).digest())
        with self._lock:
            if (p := self._verdicts.get(key)) is not None:
                return p
        p = self._judge(audio)
        with self._lock:
            self._verdicts[key] = p
        return p

    def _judge(self, audio: np.ndarray) -> float:
        n = WINDOW_S * RATE
        audio = np.pad(audio, (n - len(audio), 0))
        audio = (audio - audio.mean()) / np.sqrt(audio.var() + 1e-7)
        mel = self.features(audio, padding=0)  # (80, 800)
        (out,) = self.session.run(None, {"input_features": mel[None].astype(np.float32)})
        return float(np.asarray(out).reshape(-1)[0])
