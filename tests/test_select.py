"""M1 selection on hand-computed score tables."""

from lbt_dspy.scoring.math import answers_equivalent
from lbt_dspy.m1.select import Pair, group_answers, m1_max, m1_sum, self_consistency


def cands(*rows):
    return [Pair(a, s, i) for i, (a, s) in enumerate(rows)]


def test_max_and_sum_differ():
    # "1/2" (as 0.5 and \frac12): 3 pairs, total 0.3+0.3+0.3 = 0.9, best 0.3
    # "3": 1 pair scoring 0.8           -> MAX picks 3, SUM picks 1/2, SC picks 1/2
    table = cands(("0.5", 0.3), ("\\frac{1}{2}", 0.3), ("1/2", 0.3), ("3", 0.8))
    assert m1_max(table, answers_equivalent).answer == "3"
    assert m1_sum(table, answers_equivalent).answer == "0.5"
    assert self_consistency(table, answers_equivalent).answer == "0.5"


def test_sum_beats_majority_when_scores_say_so():
    # "4": 3 pairs of 0.1 -> 0.3 ; "5": 2 pairs of 0.6 -> 1.2
    table = cands(("4", 0.1), ("4", 0.1), ("4", 0.1), ("5", 0.6), ("5", 0.6))
    assert self_consistency(table, answers_equivalent).answer == "4"
    assert m1_sum(table, answers_equivalent).answer == "5"
    assert m1_max(table, answers_equivalent).answer == "5"


def test_ties_go_to_the_larger_group():
    # MAX tie at 0.5 between "2" (1 pair) and "7" (2 pairs): count breaks it
    table = cands(("2", 0.5), ("7", 0.5), ("7", 0.0))
    assert m1_max(table, answers_equivalent).answer == "7"
    # SUM tie at 1.0: "a" has 1 pair, "b" has 2 pairs
    table = cands(("9", 1.0), ("8", 0.5), ("8", 0.5))
    assert m1_sum(table, answers_equivalent).answer == "8"


def test_max_returns_the_best_scored_member():
    table = cands(("6", 0.2), ("6.0", 0.9), ("5", 0.5))
    best = m1_max(table, answers_equivalent)
    assert best.index == 1 and best.lbt_score == 0.9


def test_unparseable_answers_do_not_vote():
    table = cands(("", 1.0), ("3", 0.1))
    assert m1_max(table, answers_equivalent).answer == "3"
    assert m1_sum(cands(("", 1.0)), answers_equivalent) is None


def test_grouping_uses_equivalence_not_strings():
    groups = group_answers(["0.5", "1/2", "\\frac{1}{2}", "2"], answers_equivalent)
    assert groups == [[0, 1, 2], [3]]


def test_code_rules_no_vote_and_the_v_score_tie_break():
    # code: answers are not grouped (equivalent=None); LbT ties go to the higher V-score, then the earlier pair
    from lbt_dspy.m1.select import Pair

    table = [Pair("a", 0.5, 0, v_score=0.5), Pair("b", 0.5, 1, v_score=1.0), Pair("b", 0.5, 2, v_score=1.0),
             Pair("c", 0.25, 3, v_score=1.0)]
    assert m1_max(table, None, tie_break=lambda p: p.v_score).index == 1
    assert m1_max(table, None).index == 0  # no tie-break: the earlier pair, whatever the group sizes
    assert m1_max(table, lambda a, b: a == b).index == 1  # math: the larger group wins the tie
    # a pair without exam results (None) ranks as score 0
    assert m1_max([Pair("x", None, 0), Pair("y", 0.1, 1)], None).index == 1
    assert m1_max([], None) is None
