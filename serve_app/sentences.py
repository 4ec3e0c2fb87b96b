"""Split a streamed LLM reply into speakable pieces the moment each one is complete.

The first piece may end at a clause boundary (comma, semicolon, colon, dash, an ellipsis before a
lower-case word; ，、；：) once it is long enough to sound natural, because it gates the time to the
first frame. A later piece may end at one too once it is `growth` times as long as the reply before
it: TTS speaks a piece only once it is written, and whole (Piper makes a sentence's audio in one
go), so a long sentence after a short one would reach the client after the short one had played (a
stall at the seam); growing pieces keep each piece's writing and speaking within the playing of
those before, and the reply soon runs whole sentences again. Otherwise later pieces end at sentence
boundaries, with a hard cap (`_cap`) so that a run-on reply still reaches TTS in bounded chunks.

A cut is made only once it is certain: every rule below looks at most one word past the
punctuation, and waits for that word while the buffer ends before it. So the pieces never depend on
how the text was divided into deltas. When unsure we do not cut: a missed cut only makes a piece
longer (TTS still pauses at its full stop), while a wrong cut breaks a name or a phrase in two.

Where Latin end punctuation (. ! ? …, with any closing quotes or brackets after it) ends a sentence:
- only before a space; never before a lower-case word ("at 9 a.m. every day", "‘Yes!’ she said");
- never after a title or a word that always goes on ("Dr.", "Mt.", "e.g.", "vs.");
- never after "No." before a number ("No. 5"), nor after a list number ("Steps: 1. Open it");
- after an initial ("J.", "B."), a dotted acronym ("U.S.", "a.m.") or an abbreviation that may end
  a sentence ("Inc.", "etc."), only before a word that commonly opens a sentence ("Plan B. Next",
  "at 9 a.m. Then"), not before a name ("J. F. Kennedy", "Mt. Everest", "U.S. Army");
- an ellipsis, only before a capitalised word other than "I" ("Well... I think so." is one pause).
Chinese, Japanese and Hindi stops (。！？ । ॥) end a sentence with no space after them.
A piece must hold a word: "..." or "—" alone is never cut off.
"""

from __future__ import annotations

import re

_CLOSERS = "\"'”’»)\\]}」』）】》"
_STOPS = "。！？।॥"  # end a sentence with no space after them
_MARK = re.compile(
    rf"(?:(?P<cjk>[{_STOPS}][{_STOPS}!?]*)"
    r"|(?P<stop>[.!?…]+)"
    r"|(?P<cjk_clause>[，、；：]+)"
    r"|(?P<clause>(?:[,;:—–]|(?<=\s)-)+)"
    rf")[{_CLOSERS}]*"
)
_NEXT = re.compile(r"\s*[“‘\"'«(\[¿¡]*")  # the space and opening quotes before the next word
_WORD = re.compile(r"[^\W\d_]+")

_NEVER_END = {  # titles precede a name; these always go on
    "mr", "mrs", "ms", "mx", "dr", "prof", "mt", "ft", "gen", "col", "capt", "lt", "sgt", "gov",
    "sen", "rep", "rev", "hon", "pres", "fr", "e.g", "i.e", "cf", "vs", "viz", "approx", "incl",
}
_BEFORE_NUMBER = {"no", "nos", "vol", "fig", "pp"}
_MAYBE_END = {  # may end a sentence: "Acme Inc. It", "Main St. The" (but "St. Louis")
    "inc", "ltd", "co", "corp", "llc", "jr", "sr", "st", "etc", "ave", "rd", "dept", "min",
}
_OPENERS = set(
    "A An The This That These Those It Its I We You He She They My Our Your His Her Their There "
    "Here Then Next Now So But And Or Yet If When While Once After Before Because Since Although "
    "What Why How Who Where Which In On At For To From With By As Also Yes No Not Please Let Thanks "
    "Thank Well Oh Okay Finally First However Still Just Maybe Some Many Most All Every Each Both "
    "Do Does Did Is Are Was Were Can Could Will Would Should Have Has Had Sure Of Today Later".split()
)
_LONGEST_OPENER = max(map(len, _OPENERS))


class SentenceSplitter:
    """Feed text deltas with `push`; it returns the pieces completed so far. `flush` returns the rest
    and readies the splitter for the next reply."""

    def __init__(self, first_min_chars: int = 24, max_chars: int = 220, growth: float | None = 1.0):
        """`growth`: a later piece may end at a clause boundary once it is this many times as long as
        the reply before it (and `first_min_chars` long); None: only at a sentence's end."""
        self.first_min_chars = first_min_chars
        self.max_chars = max_chars
        self.growth = growth
        self._buf = ""
        self._emitted = 0
        self._said = 0  # characters in the pieces cut so far

    def push(self, delta: str) -> list[str]:
        self._buf += delta
        return self._cut_all(final=False)

    def flush(self) -> list[str]:
        pieces = self._cut_all(final=True)
        piece, self._buf, self._emitted, self._said = self._buf.strip(), "", 0, 0
        return pieces + [piece] if piece else pieces

    def _cut_all(self, final: bool) -> list[str]:
        pieces = []
        while (cut := self._next_cut(final)) is not None:
            piece, self._buf = self._buf[:cut].strip(), self._buf[cut:].lstrip()
            if piece:
                pieces.append(piece)
                self._emitted += 1
                self._said += len(piece)
        return pieces

    def _next_cut(self, final: bool) -> int | None:
        """The earliest certain cut within the cap; None while one still depends on text to come."""
        for m in _MARK.finditer(self._buf):
            if m.end() > self.max_chars:
                break
            cut = self._ends_piece(m, final)
            if cut is None:
                return None
            if cut:
                return m.end()
        return self._cap() if len(self._buf) > self.max_chars else None

    def _ends_piece(self, m: re.Match, final: bool) -> bool | None:
        """Whether the punctuation `m` ends a piece; None while that depends on text still to come."""
        buf, end, kind = self._buf, m.end(), m.lastgroup
        if end == len(buf):  # more dots or closing quotes may follow; at the end the rest goes anyway
            return False if final else None
        if not re.search(r"\w", buf[:end]):
            return False
        if kind == "cjk":
            return True
        if kind != "cjk_clause" and not buf[end].isspace():  # "3.50", "U.S", "so…so", "well-known"
            return False
        clause = self._clause_may_end(len(buf[:end].rstrip()))
        if kind != "stop":
            return clause
        i = _NEXT.match(buf, end).end()
        if i == len(buf):
            return False if final else None
        c, stop = buf[i], m.group("stop")
        if c in ".…":  # a spaced ellipsis ". . ." goes on
            return False
        ellipsis = "…" in stop or ".." in stop
        if c.islower():
            return clause and ellipsis
        if ellipsis:
            word = self._next_word(i, final)
            return None if word is None else (c.isupper() and word != "I") or clause
        if stop != ".":
            return True
        return self._full_stop_ends(m.start(), i, final)

    def _clause_may_end(self, chars: int) -> bool:
        """Whether a piece of `chars` characters may end at a clause boundary."""
        if chars < self.first_min_chars:
            return False
        return self._emitted == 0 or (self.growth is not None and chars >= self.growth * self._said)

    def _full_stop_ends(self, dot: int, i: int, final: bool) -> bool | None:
        """Whether the full stop at `dot`, with the next word at `i`, ends a sentence."""
        buf = self._buf
        token = re.search(r"[\w.]*$", buf[:dot]).group().strip(".")
        low = token.lower()
        if low in _NEVER_END or (low in _BEFORE_NUMBER and buf[i].isdigit()):
            return False
        if re.search(r"(?:^|:)\s*\d+$", buf[:dot]):  # a list number: "1. Open it", "Steps: 1. Open it"
            return False
        if low in _MAYBE_END or re.fullmatch(r"(?:[a-z]\.)+[a-z]", low) or (len(token) == 1 and token.isupper()):
            word = self._next_word(i, final)
            if word is None:
                return None
            after = i + len(word)
            if len(word) == 1 and buf[after : after + 1] == ".":  # another initial: "J. F. Kennedy"
                return False
            return word in _OPENERS
        return True

    def _next_word(self, i: int, final: bool) -> str | None:
        """The word at `i`, or None while it may still grow (only words as long as an opener matter)."""
        m = _WORD.match(self._buf, i)
        word = m.group() if m else ""
        if m and m.end() == len(self._buf) and not final and len(word) <= _LONGEST_OPENER:
            return None
        return word

    def _cap(self) -> int:
        """Cut a run-on piece at its last clause boundary, else its last space, in the second half of
        the cap; else (CJK, no spaces) at the cap itself. Looks only at the first max_chars + 1."""
        head, half = self._buf[: self.max_chars + 1], self.max_chars // 2
        clauses = [
            m.end()
            for m in _MARK.finditer(head)
            if m.lastgroup in ("clause", "cjk_clause") and m.end() < len(head)
            and (m.lastgroup == "cjk_clause" or head[m.end()].isspace())
        ]
        if clauses and clauses[-1] >= half:
            return clauses[-1]
        spaces = [m.start() for m in re.finditer(r"\s", head)]
        return spaces[-1] if spaces and spaces[-1] >= half else self.max_chars
