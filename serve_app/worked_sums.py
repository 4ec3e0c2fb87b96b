"""A sum the user asks, worked out exactly and handed to the LLM with the question.

Small models cannot add: given "What is ten minus three?" as text, SmolLM2-135M answered "Ten minus
three is a mix of two and one" and got 2 of 8 sums in the conversation set right. A calculator's
line beside the question ("(Calculator: 10 minus 3 is 7.)") is what a tool call would return, and
the model only has to say it. Only the words the user said now are read (English operators, numbers
spoken or in digits, through text2num); anything else gets no line.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable

from text_to_num import alpha2digit

_NUMBER = r"(\d+(?:\.\d+)?)"
_OPERATORS: dict[str, Callable[[float, float], float]] = {
    "plus": operator.add, "minus": operator.sub, "times": operator.mul,
    "multiplied by": operator.mul, "divided by": operator.truediv,
}
_BINARY = re.compile(rf"{_NUMBER}\s+({'|'.join(_OPERATORS)})\s+{_NUMBER}", re.I)
_HALF = re.compile(rf"\bhalf of\s+{_NUMBER}", re.I)


def _num(x: float) -> str:
    return f"{round(x, 4):g}"


def worked_sum(text: str) -> str | None:
    """'10 minus 3 is 7' for 'What is ten minus three?'; None where the text asks no sum."""
    digits = alpha2digit(text, "en", threshold=0)  # every number, even an isolated "two"
    if m := _BINARY.search(digits):
        a, word, b = float(m[1]), m[2].lower(), float(m[3])
        if word == "divided by" and b == 0:
            return None  # the model can say that one
        return f"{_num(a)} {word} {_num(b)} is {_num(_OPERATORS[word](a, b))}"
    if m := _HALF.search(digits):
        return f"half of {_num(float(m[1]))} is {_num(float(m[1]) / 2)}"
    return None


def with_worked_sum(text: str) -> str:
    """The user's words, and the calculator's line where they ask a sum."""
    line = worked_sum(text)
    return f"{text}\n(Calculator: {line}.)" if line else text
