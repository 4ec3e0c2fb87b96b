"""Split a streamed LLM reply into speakable pieces the moment each one is complete.

The first piece may end at a clause boundary (comma, semicolon, colon, dash) once it is long enough
to sound natural, because it gates the time to the first frame; later pieces end at sentence
boundaries, with a hard cap so that a run-on reply still reaches TTS in bounded chunks.
"""

from __future__ import annotations

import re

_ABBREVIATIONS = {
    "mr", "mrs", "ms", "dr", "prof", "sr", "jr", "st", "vs", "etc", "e.g", "i.e", "u.s", "no", "approx",
}
_SENTENCE_END = re.compile(r"[.!?…]+[\"')\]]*(?=\s)")
_CLAUSE_END = re.compile(r"[,;:—–]+(?=\s)|\s-\s")


class SentenceSplitter:
    """Feed text deltas with `push`; it returns the pieces completed so far. `flush` returns the rest."""

    def __init__(self, first_min_chars: int = 24, max_chars: int = 220):
        self.first_min_chars = first_min_chars
        self.max_chars = max_chars
        self._buf = ""
        self._emitted = 0

    def push(self, delta: str) -> list[str]:
        self._buf += delta
        pieces = []
        while (cut := self._next_cut()) is not None:
            piece, self._buf = self._buf[:cut].strip(), self._buf[cut:].lstrip()
            if piece:
                pieces.append(piece)
                self._emitted += 1
        return pieces

    def flush(self) -> list[str]:
        piece, self._buf = self._buf.strip(), ""
        return [piece] if piece else []

    def _next_cut(self) -> int | None:
        buf = self._buf
        for m in _SENTENCE_END.finditer(buf):
            if not self._is_abbreviation(buf, m.start()):
                return m.end()
        if self._emitted == 0:
            for m in _CLAUSE_END.finditer(buf):
                if m.end() >= self.first_min_chars:
                    return m.end()
        if len(buf) > self.max_chars:
            space = buf.rfind(" ", 0, self.max_chars)
            return space if space > 0 else self.max_chars
        return None

    @staticmethod
    def _is_abbreviation(buf: str, dot: int) -> bool:
        if buf[dot] != ".":
            return False
        word = re.search(r"([\w.]+)$", buf[:dot])
        return bool(word) and (word.group(1).lower() in _ABBREVIATIONS or len(word.group(1)) == 1)

