"""The signature every teacher and student shares: a problem in, a rationale and an answer out."""

import dspy


class SolveProblem(dspy.Signature):
    """Solve the problem step by step, then state the final answer."""

    question: str = dspy.InputField(desc="the problem to solve")
    rationale: str = dspy.OutputField(desc="step-by-step reasoning")
    answer: str = dspy.OutputField(desc="the final answer alone")
