"""The `Task` interface: one kind of problem, as a bundle of defaults, selection methods and report rows."""

from __future__ import annotations


class Task:
    """One kind of problem lbt teaches (subclasses set the class attributes; `lbt_dspy.tasks` registers them).

    Attributes:
        name: The value of the config's ``task`` key.
        defaults: Config keys the task fills when a config names it and leaves them out (dataset loader,
            scorer, exam maker: ``dataset_type``, ``exam_scorer_type``, ``exam_maker_type`` and their cfgs).
        scorer_type: The ``exam_scorer_type`` its runs must use.
        vote: Whether equivalent answers are grouped (SC and M1 SUM apply).
        tie_break: How M1 MAX breaks ties (None: the earlier pair; ``"v_score"``: the higher V-score).
        methods: The selection methods its results table shows, in order.
        command: The `lbt` command that runs it.

    Example:
        >>> from lbt_dspy.tasks import tasks
        >>> tasks.get("code")().m1_method("M1 SUM")
        'M1 MAX'
    """

    name = ""
    defaults: dict = {}
    scorer_type = ""
    vote = True
    tie_break: str | None = None
    methods: tuple[str, ...] = ()
    command = "m1"

    def m1_method(self, wanted: str) -> str:
        """The `M1` module's method for this task: `wanted`, or M1 MAX where answers are not voted."""
        return wanted if self.vote else "M1 MAX"

    def check(self, section) -> None:
        """Raise ValueError (one line, naming the key) when a config contradicts the task."""
        get = section.get if isinstance(section, dict) else (lambda k, d=None: getattr(section, k, d))
        scorer = get("exam_scorer_type")
        if self.scorer_type and scorer and scorer != self.scorer_type:
            raise ValueError(f"key 'task': {self.name} runs score with exam_scorer_type {self.scorer_type!r}, "
                             f"got {scorer!r}")

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"
