"""The seeded topic-classification generator (lbt_dspy/data/classify_gen.py)."""

from collections import Counter

from lbt_dspy.data.classify_gen import LABELS, PHRASES, make_topic_rows, topic_program, topic_task


def test_seeded_balanced_and_decidable():
    assert make_topic_rows(40, seed=3) == make_topic_rows(40, seed=3)
    assert make_topic_rows(40, seed=3) != make_topic_rows(40, seed=4)
    train, test = topic_task(120, 60, seed=0)
    assert len(train) == 120 and len(test) == 60
    assert Counter(e.topic for e in train) == {t: 30 for t in LABELS}
    assert Counter(e.topic for e in test) == {t: 15 for t in LABELS}
    assert not {e.sentence for e in test} & {e.sentence for e in train}
    for e in train + test:  # the topic's phrases, and only its phrases, are in the sentence
        hits = {t for t, ps in PHRASES.items() if any(p.lower() in e.sentence.lower() for p in ps)}
        assert hits == {e.topic}, e.sentence
        assert list(e.inputs().keys()) == ["sentence"]


def test_program_fields_are_read_by_m3():
    from lbt_dspy.m3 import TaskFields

    train, _ = topic_task(20, 4)
    f = TaskFields.from_program(topic_program(), train)
    assert f.inputs == ("sentence",) and f.output == "topic" and set(f.labels) == set(LABELS)
