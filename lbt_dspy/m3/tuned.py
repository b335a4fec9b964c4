"""`WithAdapter`: a program that runs under the adapter its demos were tuned with.

DSPy picks the adapter from ``dspy.settings``, not from the program, so a program tuned under the paper's
plain-text prompt (`ClassifierAdapter`) would run under ChatAdapter once returned. `LbTOptimizer` returns
its compiled program wrapped in `WithAdapter` whenever it tuned under an adapter of its own; under the
default adapter it returns the plain program.
"""

from __future__ import annotations

import dspy


class WithAdapter(dspy.Module):
    """Calls `program` inside ``dspy.context(adapter=adapter)``; everything else (LM, demos) is the program's.

    Saved with DSPy's JSON like any module (the state of ``program``); load it into a `WithAdapter` built
    the same way. The adapter itself is code and is not saved.

    Args:
        program: The program to run.
        adapter: The adapter to run it under.

    Example:
        >>> from lbt_dspy.m3 import ClassifierAdapter, make_classifier
        >>> tuned = WithAdapter(make_classifier("Is it a lie?"), ClassifierAdapter())
        >>> tuned.save("best.json")  # doctest: +SKIP
        >>> again = WithAdapter(make_classifier("Is it a lie?"), ClassifierAdapter()); again.load("best.json")  # doctest: +SKIP
    """

    def __init__(self, program: dspy.Module, adapter: dspy.Adapter):
        super().__init__()
        self.program = program
        self.adapter = adapter

    def forward(self, **inputs):
        with dspy.context(adapter=self.adapter):
            return self.program(**inputs)

    async def aforward(self, **inputs):
        with dspy.context(adapter=self.adapter):
            return await self.program.acall(**inputs)
