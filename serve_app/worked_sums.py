"""A sum the user asks, worked out exactly and handed to the LLM with the question.

Small models cannot add: given "What is ten minus three?" as text, SmolLM2-135M answered "Ten minus
three is a mix of two and one" and got 2 of 8 sums in the conversation set right. A calculator's
line beside the question ("Calculator: 10 minus 3 is 7.") is what a tool call would return, and
the model only has to say it (with the line in parentheses, SmolLM2 answered "2 + 3 = 5" beside
"2 plus 2 is 4"). Only the user's words are read (English operators, numbers spoken or in digits,
through text2num); anything else gets no line. "That" or "it" is the answer to the sum
the user asked just before ("Now add three to that."), which the model cannot carry either
("Three plus two is six").
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from text_to_num import alpha2digit

_NUMBER = r"(-?\d+(?:\.\d+)?)"
_OPERATORS: dict[str, Callable[[float, float], float]] = {
    "plus": operator.add, "minus": operator.sub, "times": operator.mul,
    "multiplied by": operator.mul, "divided by": operator.truediv,
}
_BINARY = re.compile(rf"{_NUMBER}\s+({'|'.join(_OPERATORS)})\s+{_NUMBER}", re.I)
_HALF = re.compile(rf"\bhalf of\s+{_NUMBER}", re.I)
_THAT = re.compile(r"\b(that|it|this|the answer|the result)\b", re.I)
# Sums said with a verb, as "a <operator> b"
_VERBS = [
    (re.compile(rf"\badd\s+{_NUMBER}\s+to\s+{_NUMBER}", re.I), r"\2 plus \1"),
    (re.compile(rf"\b(?:subtract|take(?: away)?)\s+{_NUMBER}\s+from\s+{_NUMBER}", re.I), r"\2 minus \1"),
    (re.compile(rf"\bmultiply\s+{_NUMBER}\s+by\s+{_NUMBER}", re.I), r"\1 times \2"),
    (re.compile(rf"\bdivide\s+{_NUMBER}\s+by\s+{_NUMBER}", re.I), r"\1 divided by \2"),
    (re.compile(rf"\bdouble\s+{_NUMBER}", re.I), r"\1 times 2"),
]


@dataclass(frozen=True)
class Worked:
    line: str  # "10 minus 3 is 7"
    value: float


def _num(x: float) -> str:
    return f"{round(x, 4):g}"


def work(text: str, last: float | None = None) -> Worked | None:
    """The sum `text` asks, worked out; `last`: the answer "that" refers to. None: no sum."""
    digits = alpha2digit(text, "en", threshold=0)  # every number, even an isolated "two"
    digits = re.sub(r"(\d)-(?=[a-z])", r"\1 ", digits, flags=re.I)  # ASR's "20-plus 30"
    if last is not None:
        digits = _THAT.sub(_num(last), digits)
    for verb, as_operator in _VERBS:
        digits = verb.sub(as_operator, digits)
    if m := _BINARY.search(digits):
        a, word, b = float(m[1]), m[2].lower(), float(m[3])
        if word == "divided by" and b == 0:
            return None  # the model can say that one
        value, line = _OPERATORS[word](a, b), f"{_num(a)} {word} {_num(b)}"
    elif m := _HALF.search(digits):
        a = b = float(m[1])
        value, line = a / 2, f"half of {_num(a)}"
    else:
        return None
    if not all(map(math.isfinite, (a, b, value))):
        return None  # past a float's range (400 nines): the model would be told "inf" or "nan"
    return Worked(f"{line} is {_num(value)}", value)


def worked_sum(text: str, last: float | None = None) -> str | None:
    """'10 minus 3 is 7' for 'What is ten minus three?'; None where the text asks no sum."""
    worked = work(text, last)
    return worked.line if worked else None


def last_answer(user_texts: Iterable[str]) -> float | None:
    """The answer to the sum the last of these asked, if it asked one (each may build on the one before)."""
    last = None
    for text in user_texts:
        worked = work(text, last)
        last = worked.value if worked else None
    return last


def with_worked_sum(text: str, earlier: Iterable[str] = ()) -> str:
    """The user's words, and the calculator's line where they ask a sum; `earlier`: what the user
    said before, oldest first, for "that"."""
    line = worked_sum(text, last_answer(earlier))
    return f"{text}\nCalculator: {line}." if line else text
