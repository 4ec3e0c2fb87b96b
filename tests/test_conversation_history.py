"""A barge-in cuts a reply in the history back to what the user heard, and only the reply of the
turn it names: a turn that was withdrawn (the user had only paused) or never remembered (cancelled
before it spoke) leaves the older exchanges as they are."""

from serve_app.conversation import Conversation


def talked() -> Conversation:
    conv = Conversation(id="s1")
    conv.remember("what is the capital of france", "Paris is the capital of France.", "t1")
    conv.remember("and of italy", "Rome is the capital of Italy. It is an old city.", "t2")
    return conv


def test_the_interrupted_reply_keeps_what_was_heard():
    conv = talked()
    assert conv.keep_heard("t2", "Rome is the capital of Italy.…")
    assert [m["content"] for m in conv.history] == [
        "what is the capital of france", "Paris is the capital of France.",
        "and of italy", "Rome is the capital of Italy.…",
    ]


def test_a_reply_interrupted_before_any_was_heard_leaves_with_its_question():
    conv = talked()
    conv.keep_heard("t2", "")
    assert [m["content"] for m in conv.history] == ["what is the capital of france", "Paris is the capital of France."]
    conv.keep_heard("t2", "")  # told twice (the page and the server both saw the barge-in)
    assert len(conv.history) == 2 and conv.last_turn is None


def test_an_interruption_of_another_turn_leaves_the_history_alone():
    conv = talked()
    assert not conv.keep_heard("t3", "")  # a turn that never remembered anything (cancelled before it spoke)
    assert not conv.keep_heard("t1", "Paris…")  # an older turn: its exchange is not the last
    assert [m["content"] for m in conv.history][-1] == "Rome is the capital of Italy. It is an old city."
    assert len(conv.history) == 4


def test_a_withdrawn_turn_cannot_cut_the_reply_before_it():
    conv = talked()
    conv.remember("but the", "I think so, but", "t3")  # a speculative turn that spoke...
    conv.keep_heard("t3", "")  # ...withdrawn: the user had only paused
    conv.keep_heard("t3", "I think so,…")  # the page's report of the same barge-in comes after
    assert [m["content"] for m in conv.history][-1] == "Rome is the capital of Italy. It is an old city."


def test_a_withdrawn_turn_leaves_a_full_history_too():
    """At max_messages the history no longer grows, yet the withdrawn turn's exchange still goes."""
    conv = Conversation(id="s1", max_messages=4)
    for k in range(3):
        conv.remember(f"question {k}", f"answer {k}", f"t{k}")
    assert len(conv.history) == 4 and conv.last_turn == "t2"
    conv.keep_heard("t2", "")
    assert [m["content"] for m in conv.history] == ["question 1", "answer 1"]
