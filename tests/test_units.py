"""The pieces that need no cluster: audio decoding, segment muxing, fragment bounds, caches.
(Splitting: test_sentences.py; config: test_config.py.)"""


import numpy as np
import pytest

from avatar_core.media import MediaError, decode_audio, mux_segment
from tests.conftest import JFK
from tests.segments import decode_segment


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


@pytest.mark.parametrize(
    "n, expected",
    [
        (0, []),
        (7, [(0, 7)]),  # shorter than the first fragment
        (10, [(0, 10)]),
        (12, [(0, 10), (10, 12)]),  # the first stays short even if a tiny tail follows it
        (36, [(0, 10), (10, 36)]),  # a 1-frame tail joins the fragment before it
        (40, [(0, 10), (10, 40)]),  # so does a tail of 5 frames (< a quarter of 25)
        (60, [(0, 10), (10, 35), (35, 60)]),
    ],
)
def test_fragment_bounds_first_short_then_about_a_second(n, expected):
    from avatar_core.media import fragment_bounds

    assert fragment_bounds(n, 25, 0.4, 1.0) == expected


@pytest.mark.parametrize(
    "n, expected",
    [
        (10, [(0, 10)]),
        (30, [(0, 10), (10, 30)]),  # the second at most twice the first
        (60, [(0, 10), (10, 30), (30, 60)]),  # then up to a second (a 5-frame tail joins it)
        (100, [(0, 10), (10, 30), (30, 55), (55, 80), (80, 100)]),
    ],
)
def test_fragment_bounds_grow_at_most_by_growth(n, expected):
    """Each fragment is made while the one before plays: with growth 2 a 0.4 s first is followed by
    0.8 s, not 1 s."""
    from avatar_core.media import fragment_bounds

    assert fragment_bounds(n, 25, 0.4, 1.0, growth=2.0) == expected
