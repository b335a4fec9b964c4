"""A seeded generator of a four-way topic classification task: sentences about sports, food, weather or animals.

Every sentence is a topic-neutral frame ("My neighbour told me about {a} and {b}.") filled with one or two
phrases of its topic, so the topic is decidable from the phrases alone and in-context examples that share
those phrases help a small model (it can copy the label of a similar example). Fields are ``sentence`` and
``topic`` (not ``text``/``label``): the task also exercises M3 on a program with its own field names and a
multi-class label set. ``eval/bench_m3.py`` uses it as the task the embedded 135M model can partly do.
"""

from __future__ import annotations

import random

import dspy

QUESTION = "Which topic is the sentence about: sports, food, weather or animals?"
LABELS = ("sports", "food", "weather", "animals")

PHRASES = {
    "sports": ["the goalkeeper", "a penalty kick", "the referee", "a late touchdown", "the marathon runners",
               "a new tennis racket", "the scoreboard", "the final whistle", "the league table", "a slam dunk",
               "the stadium crowd", "the relay race", "the cycling team", "a hat-trick"],
    "food": ["a chocolate cake", "the garlic bread", "the tomato soup", "a ripe mango", "the frying pan",
             "fresh pasta", "the pizza oven", "a bowl of rice", "the spicy curry", "a cheese sandwich",
             "the bakery", "roasted carrots", "the pancakes", "a pot of stew"],
    "weather": ["the thunderstorm", "heavy rain", "a cold front", "the snowfall", "strong winds", "the heatwave",
                "morning fog", "the hail", "a clear sky", "the forecast", "the humidity", "a rainbow",
                "the first frost", "a sudden drizzle"],
    "animals": ["the puppy", "a hungry fox", "the elephants", "a barn owl", "the goldfish", "a stray cat",
                "the horses", "a wild rabbit", "the parrot", "a herd of cows", "the squirrel", "a sleepy turtle",
                "the ducklings", "a curious goat"],
}

FRAMES_ONE = ["I still remember {a} from last summer.", "The news today was mostly about {a}.",
              "We took photos of {a} yesterday.", "Nobody expected {a} to be the highlight of the day.",
              "My sister keeps talking about {a}.", "There was a long article about {a} in the paper.",
              "Grandpa told a funny story about {a}.", "The children drew pictures of {a} at school."]
FRAMES_TWO = ["Everyone was talking about {a} and {b} this morning.", "My neighbour told me about {a} and {b}.",
              "First {a}, then {b}: what a day.", "The podcast covered {a} and later {b}.",
              "I wrote in my diary about {a} and {b}."]


def make_topic_rows(n: int, seed: int = 0) -> list[dict]:
    """`n` rows ``{"sentence", "topic"}``, topics in rotation (balanced), the rest drawn from `seed`.

    Example:
        >>> rows = make_topic_rows(4, seed=1)
        >>> [r["topic"] for r in rows]
        ['sports', 'food', 'weather', 'animals']
        >>> rows == make_topic_rows(4, seed=1)
        True
    """
    rng = random.Random(f"topics/{seed}")
    rows = []
    for i in range(n):
        topic = LABELS[i % len(LABELS)]
        if rng.random() < 0.5:
            sentence = rng.choice(FRAMES_ONE).format(a=rng.choice(PHRASES[topic]))
        else:
            a, b = rng.sample(PHRASES[topic], 2)
            sentence = rng.choice(FRAMES_TWO).format(a=a, b=b)
        rows.append({"sentence": sentence[0].upper() + sentence[1:], "topic": topic})
    return rows


def topic_task(num_train: int = 200, num_test: int = 100, seed: int = 0) -> tuple[list, list]:
    """Train and test `dspy.Example`s (input ``sentence``, output ``topic``), disjoint seeds, no test sentence
    in the train set.

    Example:
        >>> train, test = topic_task(8, 4)
        >>> list(train[0].inputs().keys()), sorted({e.topic for e in train}) == sorted(LABELS)
        (['sentence'], True)
    """
    train_rows = make_topic_rows(num_train, seed=2 * seed)
    seen = {r["sentence"] for r in train_rows}
    # Sentences repeat (a finite grammar): drop test rows seen in training, keep the topics balanced.
    pool = [r for r in make_topic_rows(num_test * 4, seed=2 * seed + 1) if r["sentence"] not in seen]
    by_topic = {t: [r for r in pool if r["topic"] == t] for t in LABELS}
    test_rows = [by_topic[LABELS[i % 4]][i // 4] for i in range(num_test)]

    def as_examples(rows):
        return [dspy.Example(**r).with_inputs("sentence") for r in rows]

    return as_examples(train_rows), as_examples(test_rows)


def topic_program() -> dspy.Predict:
    """The task's program: ``sentence -> topic`` with the task question as its instructions."""
    return dspy.Predict(dspy.Signature("sentence -> topic", QUESTION))
