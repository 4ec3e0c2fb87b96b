"""The sentence splitter, from what a listener expects to hear as one piece; pure Python, no cluster.

Every case is fed whole and in small deltas, as an LLM streams, and must give the same pieces.
"""

import random
import re

import pytest

from serve_app.sentences import SentenceSplitter


def split(text: str, step: int | None = 3, growth: float | None = 1.0) -> list[str]:
    """Feed `text` in deltas of `step` characters (None: whole), then flush."""
    s, step = SentenceSplitter(growth=growth), step or max(len(text), 1)
    out = []
    for i in range(0, len(text), step):
        out += s.push(text[i : i + step])
    return out + s.flush()


CASES = [
    # The existing expectations.
    ("Hello there. How are you? I am", ["Hello there.", "How are you?", "I am"]),
    (
        "Dr. Smith paid 3.50 dollars, e.g. for tea at J. F. K. airport. Then he left.",
        ["Dr. Smith paid 3.50 dollars,", "e.g. for tea at J. F. K. airport.", "Then he left."],
    ),
    (
        "Well, that is a lovely question to ask, and I like it. Later, much later, we talk.",
        ["Well, that is a lovely question to ask,", "and I like it.", "Later, much later, we talk."],
    ),
    # "no", single letters and digits end a sentence like any word; real initials stay together.
    ("The answer is no. Then we wait.", ["The answer is no.", "Then we wait."]),
    ("No. It is not.", ["No.", "It is not."]),
    ("We go with Plan B. Next, we eat.", ["We go with Plan B.", "Next, we eat."]),
    ("It is 4. Next is 5.", ["It is 4.", "Next is 5."]),
    ("Take vitamin C. It helps.", ["Take vitamin C.", "It helps."]),
    ("Press x. Then wait.", ["Press x.", "Then wait."]),
    ("The winner is No. 5 on the list.", ["The winner is No. 5 on the list."]),
    ("I met J. F. Kennedy once. He smiled.", ["I met J. F. Kennedy once.", "He smiled."]),
    ("Ask George W. Bush about it. He knows.", ["Ask George W. Bush about it.", "He knows."]),
    ("First, open the box. 2 pens are inside.", ["First, open the box.", "2 pens are inside."]),
    ("Steps: 1. Open the lid. 2. Pour the tea.", ["Steps: 1. Open the lid.", "2. Pour the tea."]),
    ("It costs $3.50. That is cheap.", ["It costs $3.50.", "That is cheap."]),
    # Abbreviations go on when the sentence does, and end it when a new one starts.
    ("Mt. Everest is high. It is cold there.", ["Mt. Everest is high.", "It is cold there."]),
    ("Mr. and Mrs. Smith came. Dr. Who did not.", ["Mr. and Mrs. Smith came.", "Dr. Who did not."]),
    ("We meet at 9 a.m. every day.", ["We meet at 9 a.m. every day."]),
    ("We met at 9 a.m. Then we ate.", ["We met at 9 a.m.", "Then we ate."]),
    ("The show ends at 10 p.m. sharp, so come early.", ["The show ends at 10 p.m. sharp,", "so come early."]),
    ("Acme Inc. makes tools. They are good.", ["Acme Inc. makes tools.", "They are good."]),
    ("I work at Acme Inc. It is fine.", ["I work at Acme Inc.", "It is fine."]),
    ("U.S. policy changed. Prices rose.", ["U.S. policy changed.", "Prices rose."]),
    ("Prices rose in the U.S. The rest held.", ["Prices rose in the U.S.", "The rest held."]),
    ("The U.S. Army is large.", ["The U.S. Army is large."]),
    ("Drink tea daily, e.g. Earl Grey.", ["Drink tea daily, e.g. Earl Grey."]),
    ("I shop a lot. We buy apples, pears, etc. Then we go home.", ["I shop a lot.", "We buy apples, pears, etc.", "Then we go home."]),
    ("Martin Luther King Jr. was a leader. He spoke well.", ["Martin Luther King Jr. was a leader.", "He spoke well."]),
    ("St. Louis is big. He lives on Main St. The house is red.", ["St. Louis is big.", "He lives on Main St.", "The house is red."]),
    # Closing quotes and brackets, straight or curly, stay with their sentence.
    ("He said “stop.” Then he left.", ["He said “stop.”", "Then he left."]),
    ('He said "stop." Then he left.', ['He said "stop."', "Then he left."]),
    ("‘Yes!’ she said. Then she ran.", ["‘Yes!’ she said.", "Then she ran."]),
    ("'Yes!' she said. Then she ran.", ["'Yes!' she said.", "Then she ran."]),
    ("She asked, “Why?” He shrugged.", ["She asked, “Why?”", "He shrugged."]),
    ("(It was late.) We left.", ["(It was late.)", "We left."]),
    ("He shouted: «Run!» We ran.", ["He shouted: «Run!»", "We ran."]),
    ("It is late. “Go home,” she said.", ["It is late.", "“Go home,” she said."]),
    ("What?! No way.", ["What?!", "No way."]),
    # An ellipsis is a pause: it ends a sentence only before a capitalised word (not "I").
    ("Well... I think so.", ["Well... I think so."]),
    ("Wait… what? Really.", ["Wait… what?", "Really."]),
    ("I waited... Nobody came.", ["I waited...", "Nobody came."]),
    ("Hmm… Let me think about it.", ["Hmm…", "Let me think about it."]),
    ("It was... strange. Then it stopped.", ["It was... strange.", "Then it stopped."]),
    ("So . . . yes, I agree.", ["So . . . yes, I agree."]),
    (
        "I was thinking about it for a while... and then I left. Bye.",
        ["I was thinking about it for a while...", "and then I left.", "Bye."],
    ),
    # Other first-clause boundaries: dashes and semicolons, once the piece is long enough.
    ("That is a really good question — let me think. Okay.", ["That is a really good question —", "let me think.", "Okay."]),
    ("That is a really good question - let me think. Okay.", ["That is a really good question -", "let me think.", "Okay."]),
    ("I would love to help you with that; here is how. Go.", ["I would love to help you with that;", "here is how.", "Go."]),
    ("Sure!\n\nHere it is.", ["Sure!", "Here it is."]),
    # Chinese, Japanese and Hindi stops need no space after them.
    ("你好。今天天气很好！我们去公园吧？好的。", ["你好。", "今天天气很好！", "我们去公园吧？", "好的。"]),
    ("他说：“好。”然后走了。", ["他说：“好。”", "然后走了。"]),
    ("什么？！真的吗？", ["什么？！", "真的吗？"]),
    ("好的，我知道了。", ["好的，我知道了。"]),
    (
        "今天我们要讨论的问题非常复杂而且涉及很多方面的内容，所以我会慢慢解释。然后，我们休息。",
        ["今天我们要讨论的问题非常复杂而且涉及很多方面的内容，", "所以我会慢慢解释。", "然后，我们休息。"],
    ),
    ("こんにちは。元気ですか？はい、元気です。", ["こんにちは。", "元気ですか？", "はい、元気です。"]),
    ("नमस्ते। आप कैसे हैं? मैं ठीक हूँ।", ["नमस्ते।", "आप कैसे हैं?", "मैं ठीक हूँ।"]),
    ("मैं घर जा रहा हूँ।फिर खाना खाऊँगा।", ["मैं घर जा रहा हूँ।", "फिर खाना खाऊँगा।"]),
]


@pytest.mark.parametrize("step", [1, 3, 7, None], ids=["by1", "by3", "by7", "whole"])
@pytest.mark.parametrize(("text", "expected"), CASES, ids=[t[:32] for t, _ in CASES])
def test_splitter_cuts_where_a_listener_expects(text, expected, step):
    assert split(text, step) == expected


@pytest.mark.parametrize(("text", "expected"), CASES, ids=[t[:32] for t, _ in CASES])
def test_splitter_does_not_depend_on_how_the_text_was_streamed(text, expected):
    rng = random.Random(text)
    for _ in range(20):
        s, out, i = SentenceSplitter(), [], 0
        while i < len(text):
            n = rng.randint(1, 6)
            out += s.push(text[i : i + n])
            i += n
        assert out + s.flush() == expected


# A reply the shipped LLM gave to jfk.flac: its short first sentence played (1.0 s) before the long second
# one (7.8 s of speech, spoken whole once written) had reached the client, a stall at the seam.
SHORT_THEN_LONG = ("I'm glad of you. I'll make sure to be more helpful in the future, but for now, let's just say that "
                   'my answer is: "Yes, and so are your friends."')


@pytest.mark.parametrize("step", [1, 3, 7, None])
def test_a_long_sentence_after_a_short_piece_ends_at_a_clause_once_as_long_as_the_reply_before(step):
    assert split(SHORT_THEN_LONG, step) == [
        "I'm glad of you.", "I'll make sure to be more helpful in the future,",
        'but for now, let\'s just say that my answer is: "Yes, and so are your friends."']
    # the pieces grow: a clause ends a later piece only once it is as long as the reply before it
    # (and as the first piece's minimum), so the reply soon runs whole sentences again
    assert split("Sure. I can help with that, and I will, because you asked, so let us begin now.", step) == [
        "Sure.", "I can help with that, and I will,", "because you asked, so let us begin now."]
    assert split(SHORT_THEN_LONG, step, growth=2.0)[1] == "I'll make sure to be more helpful in the future,"
    assert split(SHORT_THEN_LONG, step, growth=None) == [  # later pieces end at a sentence's end only
        "I'm glad of you.", SHORT_THEN_LONG[len("I'm glad of you. "):]]


def test_splitter_emits_each_sentence_as_soon_as_it_ends():
    s = SentenceSplitter()
    assert s.push("Hello there. How ") == ["Hello there."]
    assert s.push("are you? I am") == ["How are you?"]
    assert s.flush() == ["I am"]


@pytest.mark.parametrize(
    "deltas",
    [
        [("I saw Dr.", []), (" ", []), ("Smith. ", []), ("He", ["I saw Dr. Smith."])],
        [("The answer is no.", []), (" ", []), ("T", ["The answer is no."])],
        [("The winner is No.", []), (" 5", []), (" today.", [])],
        [("We go with Plan B. Ne", []), ("xt time", ["We go with Plan B."])],
        [("I met J. F", []), (". Kennedy", [])],
        [("He said “stop.", []), ("”", []), (" ", []), ("Then", ["He said “stop.”"])],
        [("他说：“好。", []), ("”", []), ("然", ["他说：“好。”"])],
        [("Well..", []), (". I think so", [])],
    ],
)
def test_splitter_waits_until_a_cut_is_certain(deltas):
    s = SentenceSplitter()
    for delta, expected in deltas:
        assert s.push(delta) == expected, delta


def test_flush_settles_what_was_waiting_on_the_next_word():
    s = SentenceSplitter()
    assert s.push("We met at 9 a.m. Then") == []
    assert s.flush() == ["We met at 9 a.m.", "Then"]


@pytest.mark.parametrize("step", [1, 3, 7, None])
def test_splitter_caps_run_on_text_at_a_space(step):
    pieces = split("word " * 200, step)
    assert len(pieces) > 1 and all(len(p) <= 220 for p in pieces)
    assert " ".join(pieces).split() == ["word"] * 200
    assert all(len(p) > 200 for p in pieces[:-1]), "cut at the last space before the cap, not earlier"


@pytest.mark.parametrize("step", [1, 3, 7, None])
def test_splitter_caps_run_on_text_at_a_clause_when_it_can(step):
    text = "Hi. " + "Alpha beta gamma, " * 40
    pieces = split(text, step)
    assert pieces[0] == "Hi."
    assert all(len(p) <= 220 and p.endswith(",") for p in pieces[1:-1])
    assert " ".join(pieces).split() == text.split()


@pytest.mark.parametrize("step", [1, 3, 7, None])
def test_splitter_caps_text_without_spaces_at_the_cap(step):
    text = "中文" * 250
    assert [len(p) for p in split(text, step)] == [220, 220, 60]
    assert "".join(split(text, step)) == text
    run_on = "这是一个很长的句子，" * 40  # Chinese commas: the first clause once long enough, then the cap
    pieces = split(run_on, step)
    assert pieces[0] == "这是一个很长的句子，" * 3
    assert all(len(p) <= 220 and p.endswith("，") for p in pieces)
    assert "".join(pieces) == run_on


def test_splitter_never_cuts_off_punctuation_alone():
    for text in ["Yes. ... Okay then.", "So — — yes.", "Fine. !!! Right."]:
        for step in (1, 3, None):
            assert all(re.search(r"\w", p) for p in split(text, step)), text


def test_splitter_gives_the_same_pieces_however_random_tricky_text_is_streamed():
    tokens = ["Dr.", "no.", "B.", "J.", "4.", "3.50", "a.m.", "U.S.", "Inc.", "e.g.", "...", "…", ". . .", "“", "”",
              "‘", "’", '"', "(", ")", "!", "?", ",", ";", "—", "-", "。", "！", "，", "।", "The", "Then", "I",
              "Next", "Kennedy", "word", "tea", "你好", "नमस्ते", "5", "1.", "\n"]
    rng = random.Random(0)
    for _ in range(300):
        text = "".join(rng.choice(tokens) + rng.choice(["", " ", " "]) for _ in range(rng.randint(1, 120)))
        whole = split(text, None)
        assert split(text, 1) == split(text, 4) == whole, text
        assert all(len(p) <= 220 for p in whole)
        assert re.sub(r"\s", "", "".join(whole)) == re.sub(r"\s", "", text), "nothing lost or added"
