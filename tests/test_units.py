"""The pieces that need no cluster: sentence splitting, audio decoding, segment muxing, config."""

from pathlib import Path

import numpy as np
import pytest
import yaml

from avatar_core.media import MediaError, decode_audio, mux_segment
from serve_app.cache import LruCache
from avatar_core.config import AppConfig
from serve_app.sentences import SentenceSplitter
from tests.conftest import JFK, ROOT
from tests.segments import decode_segment


def split(text: str, step: int = 3) -> list[str]:
    """Feed `text` in small deltas, as an LLM streams it."""
    s = SentenceSplitter()
    out = []
    for i in range(0, len(text), step):
        out += s.push(text[i : i + step])
    return out + s.flush()


def test_splitter_emits_each_sentence_as_soon_as_it_ends():
    s = SentenceSplitter()
    assert s.push("Hello there. How ") == ["Hello there."]
    assert s.push("are you? I am") == ["How are you?"]
    assert s.flush() == ["I am"]


def test_splitter_keeps_abbreviations_decimals_and_initials_together():
    text = "Dr. Smith paid 3.50 dollars, e.g. for tea at J. F. K. airport. Then he left."
    assert split(text) == ["Dr. Smith paid 3.50 dollars,", "e.g. for tea at J. F. K. airport.", "Then he left."]


def test_splitter_cuts_a_long_first_clause_early_but_not_later_ones():
    text = "Well, that is a lovely question to ask, and I like it. Later, much later, we talk."
    assert split(text) == ["Well, that is a lovely question to ask,", "and I like it.", "Later, much later, we talk."]


def test_splitter_caps_run_on_text():
    pieces = split("word " * 200)
    assert len(pieces) > 1 and all(len(p) <= 220 for p in pieces)
    assert " ".join(pieces).split() == ["word"] * 200


def test_decode_audio_downmixes_and_resamples_real_speech():
    pcm = decode_audio(JFK.read_bytes(), max_duration_s=60)  # stereo, 44.1 kHz, 24-bit FLAC
    assert pcm.dtype == np.float32 and pcm.ndim == 1
    assert abs(pcm.size / 16_000 - 11.0) < 0.1
    assert 0.05 < np.abs(pcm).max() <= 1.0


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (b"", "empty_audio"),
        (b"this is not audio at all" * 10, "undecodable_audio"),
        (JFK.read_bytes()[:200], "undecodable_audio"),
    ],
)
def test_decode_audio_rejects_bad_input_with_a_code(data, code):
    with pytest.raises(MediaError) as err:
        decode_audio(data, max_duration_s=60)
    assert err.value.code == code


def test_decode_audio_enforces_the_duration_cap():
    with pytest.raises(MediaError) as err:
        decode_audio(JFK.read_bytes(), max_duration_s=5)
    assert err.value.code == "audio_too_long"


def test_decode_audio_keeps_what_a_truncated_file_holds():
    data = JFK.read_bytes()
    pcm = decode_audio(data[: len(data) // 2], max_duration_s=60)
    assert 3.0 < pcm.size / 16_000 < 8.0


@pytest.mark.parametrize("seconds", [0.03, 0.5, 0.6, 1.0, 2.31, 4.7])  # 0.6 s: AAC overshoots by exactly one frame
def test_mux_segment_keeps_audio_and_video_the_same_length_and_aligned(seconds):
    rate = 22_050
    audio = np.zeros(int(seconds * rate), np.float32)
    click = int(seconds / 2 * rate)
    audio[click : click + 100] = 0.9
    n = max(1, int(np.ceil(seconds * 25)))
    frames = np.full((n, 96, 128, 3), 128, np.uint8)
    seg = decode_segment(mux_segment(frames, audio, rate).data)
    assert len(seg.frames) == n and seg.frames[0].shape == (96, 128, 3)
    assert seg.same_length_within_a_frame()
    heard = np.argmax(np.abs(seg.audio) > 0.4) / seg.audio_rate
    assert abs(heard - click / rate) < 0.005  # no priming delay left in the decoded audio


def test_lru_cache_bounds_weight_and_count():
    cache = LruCache(max_items=3, max_weight=10, weigh=len)
    for key, value in [("a", b"1234"), ("b", b"1234"), ("c", b"1234")]:
        cache.put(key, value)
    assert cache.get("a") is None and cache.get("c") == b"1234" and cache.weight == 8
    for key in "defg":
        cache.put(key, b"")
    assert len(cache) == 3


def test_serve_config_fits_a_cpu_machine_and_validates():
    cfg = yaml.safe_load((ROOT / "serve_config.yaml").read_text())
    (application,) = cfg["applications"]
    AppConfig.model_validate(application["args"])
    names = {d["name"] for d in application["deployments"]}
    assert names == {"Ingress", "ASR", "LLM", "TTS", "Animator"}
    for d in application["deployments"]:
        opts = d["ray_actor_options"]
        assert 0 < opts["num_cpus"] < 1 and opts["num_gpus"] == 0, d["name"]
        assert d["autoscaling_config"]["min_replicas"] >= 1, d["name"]
    most = sum(d["ray_actor_options"]["num_cpus"] * d["autoscaling_config"]["max_replicas"] for d in application["deployments"])
    assert most <= 2, "at full scale-out the graph must still fit two cores"
