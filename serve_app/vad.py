"""What a listening session costs the ingress, cut: Silero VAD over all of a message's windows in one
ONNX call, and the endpointer run on the event loop (no thread hop) whenever it cannot reach the
turn model. `serve_app/ws_session.py` runs its endpointer this way.

Measured (docs/benchmarks.md, "Many sessions"): per PCM message the session paid a hop to a worker
thread (`asyncio.to_thread`) and one `session.run` per 32 ms window. The hop costs more CPU than the
VAD itself (thread wake-ups and the GIL handed back and forth, about 0.1 ms a message), and it is
only needed at a pause, where the turn model takes tens of ms. Silero's ONNX graph takes a sequence
of windows in one call (its input is [windows, 576], its LSTM state carried across them: the
probabilities are the same as one call per window, `tests/test_vad.py`), which costs about 40 %
less per window than one call each.

- `score_windows`: probabilities of consecutive windows in one call, with the context and LSTM
  state carried in and out;
- `BatchedEndpointer`: `serve_app.endpointing.Endpointer` scoring each push's windows in one call
  (same events);
- `may_ask_turn_model`: whether a push of `n` samples could reach the turn model; when it cannot,
  push on the loop, else in a thread.
"""

from __future__ import annotations

import numpy as np

from serve_app.endpointing import CONTEXT, RATE, WINDOW, Endpointer


def score_windows(session, windows: np.ndarray, context: np.ndarray, state: np.ndarray
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Silero's speech probability for each of `windows` ([k, 512] float32, consecutive), the
    first seeing `context` (the 64 samples before it) and starting from LSTM `state` ([2, 1, 1, 128]);
    returns (probabilities [k], the context after the last window, the state after it)."""
    if len(windows) == 0:
        return np.zeros(0, np.float32), context, state
    contexts = np.concatenate([context[None], windows[:-1, -CONTEXT:]])
    x = np.concatenate([contexts, windows], axis=1).astype(np.float32, copy=False)
    out, h, c = session.run(None, {"input": x, "h": state[0], "c": state[1]})
    return np.asarray(out, np.float32).reshape(-1), windows[-1, -CONTEXT:].copy(), np.stack([h, c])


class BatchedEndpointer(Endpointer):
    """The endpointer, its windows scored one push at a time in one ONNX call; the same events."""

    def push(self, chunk: np.ndarray):
        if chunk.dtype == np.int16:
            chunk = chunk.astype(np.float32) / 32768.0
        audio = np.concatenate([self._pending, chunk.astype(np.float32, copy=False)])
        n = len(audio) // WINDOW * WINDOW
        self._pending = audio[n:]
        windows = audio[:n].reshape(-1, WINDOW)
        probs, self._context, self._state = score_windows(self.session, windows, self._context, self._state)
        self._scores = iter(probs.tolist())
        events = []
        for window in windows:
            events += self._window(window)
        return events

    def _prob(self, window: np.ndarray) -> float:
        return next(self._scores)


def may_ask_turn_model(endpointer: Endpointer, n_samples: int) -> bool:
    """Whether pushing `n_samples` more could ask the turn model (tens of ms: push it in a thread).
    The model is asked only in an utterance that has started (min_speech_s of speech) and then paused
    for turn_silence_s; outside an utterance a push shorter than both together cannot get there.
    False also without a turn model."""
    if endpointer.turn_model is None:
        return False
    if endpointer._speech:  # in an utterance (or a burst of noise being judged)
        return True
    cfg = endpointer.cfg
    windows = (len(endpointer._pending) + n_samples) // WINDOW
    return (windows + 1) * WINDOW >= RATE * (cfg.min_speech_s + cfg.turn_silence_s)  # a window to spare
