"""The ``similar`` exam maker: other bank problems like the teaching problem (the code path's exams).

The paper's code exams are other problems of the same LeetCode tag (the seed's ``code_metainfo``
maker); HumanEval has no topic tags, so there the exam is the problems closest in wording. Both are
one rule here: keep the bank problems that share the teaching problem's tags (when it has tags and
enough of them do), then take the `num_exam_questions` most similar by TF-IDF cosine (or token
Jaccard) over the problem text. Pure Python, no model download, deterministic (ties: bank order).
"""

from __future__ import annotations

import math
import re
from collections import Counter

from ..errors import LbtError
from .makers import ExamMaker, exam_makers

_WORD = re.compile(r"[A-Za-z]+|\d+")
_CAMEL = re.compile(r"[A-Z]?[a-z]+|[A-Z]+(?![a-z])|\d+")


def tokenize(text: str) -> list[str]:
    """Lower-cased word tokens; identifiers are split at ``_`` and camelCase, 1-letter tokens dropped.

    Example:
        >>> tokenize("def has_close_elements(numbers: List[float]) -> maxSubArray")
        ['def', 'has', 'close', 'elements', 'numbers', 'list', 'float', 'max', 'sub', 'array']
    """
    out = []
    for word in _WORD.findall(text or ""):
        for part in _CAMEL.findall(word):
            if len(part) > 1:
                out.append(part.lower())
    return out


def parse_tags(value) -> frozenset[str]:
    """Tags as a set: a comma-joined string (the seed's format) or a list; case and spaces ignored."""
    if value is None:
        return frozenset()
    items = value if isinstance(value, (list, tuple, set, frozenset)) else str(value).split(",")
    return frozenset(t.strip().lower() for t in items if str(t).strip())


class TfIdf:
    """TF-IDF vectors (sublinear tf, smoothed idf) over a corpus, with cosine similarity."""

    def __init__(self, docs: list[list[str]]):
        df = Counter(t for d in docs for t in set(d))
        n = len(docs)
        self.idf = {t: math.log((1 + n) / (1 + c)) + 1.0 for t, c in df.items()}
        self.default_idf = math.log(1 + n) + 1.0  # a word no bank problem has
        self.vectors = [self.vector(d) for d in docs]

    def vector(self, tokens: list[str]) -> dict[str, float]:
        vec = {t: (1.0 + math.log(c)) * self.idf.get(t, self.default_idf) for t, c in Counter(tokens).items()}
        norm = math.sqrt(sum(v * v for v in vec.values())) or 1.0
        return {t: v / norm for t, v in vec.items()}

    @staticmethod
    def cosine(a: dict[str, float], b: dict[str, float]) -> float:
        if len(a) > len(b):
            a, b = b, a
        return sum(v * b.get(t, 0.0) for t, v in a.items())


def jaccard(a: set, b: set) -> float:
    return len(a & b) / len(a | b) if (a or b) else 0.0


@exam_makers.register("similar")
class SimilarExamMaker(ExamMaker):
    """Exam problems for a teaching problem (TP): the `num_exam_questions` most similar *other*
    bank problems, among those with the TP's tags when it has tags and at least that many share them.

    Args:
        exam_bank_dataset: The exam bank (rows with ``question``; ``unique_id`` identifies the TP itself).
        num_exam_questions: Exam problems per TP (k).
        num_repetitions: How often the exam list is asked (``[e1, e2, e1, e2, ...]``).
        similarity: ``"tfidf"`` (cosine of TF-IDF vectors, idf over the bank) or ``"jaccard"``
            (token-set overlap).
        text_key: The field compared (default ``question``).
        tag_key: The field holding tags (comma-joined string or list); ``None`` ignores tags.
        tag_match: ``"all"``: an exam problem must carry every tag of the TP (the seed's
            ``t_item["tags"] in exam_item["tags"]``); ``"any"``: one shared tag is enough.

    Example:
        >>> bank = [{"unique_id": str(i), "question": q} for i, q in enumerate(
        ...     ["sum of a list of integers", "sort a list of strings", "sum of the integers in a list"])]
        >>> [e["unique_id"] for e in SimilarExamMaker(bank, 1).make_exam_questions([bank[0]])]
        ['2']
    """

    def __init__(self, exam_bank_dataset: list[dict], num_exam_questions: int = 2, num_repetitions: int = 1,
                 similarity: str = "tfidf", text_key: str = "question", tag_key: str | None = "tags",
                 tag_match: str = "all"):
        super().__init__(exam_bank_dataset)
        if num_exam_questions < 1 or num_repetitions < 1:
            raise LbtError("exam_maker_cfg: num_exam_questions and num_repetitions must be >= 1")
        if similarity not in ("tfidf", "jaccard"):
            raise LbtError(f"exam_maker_cfg.similarity: 'tfidf' or 'jaccard', got {similarity!r}")
        if tag_match not in ("all", "any"):
            raise LbtError(f"exam_maker_cfg.tag_match: 'all' or 'any', got {tag_match!r}")
        self.num_exam_questions = num_exam_questions
        self.num_repetitions = num_repetitions
        self.similarity = similarity
        self.text_key = text_key
        self.tag_key = tag_key
        self.tag_match = tag_match
        for n, row in enumerate(self.exam_bank):
            if not isinstance(row.get(text_key), str):
                raise LbtError(f"exam_maker_type similar: exam bank row {n} has no text in {text_key!r}")
        self._tokens = [tokenize(r[text_key]) for r in self.exam_bank]
        self._sets = [set(t) for t in self._tokens]
        self._tfidf = TfIdf(self._tokens) if similarity == "tfidf" else None
        self._tags = [parse_tags(r.get(tag_key)) if tag_key else frozenset() for r in self.exam_bank]

    def _is_self(self, item: dict, n: int) -> bool:
        row = self.exam_bank[n]
        if item.get("unique_id") is not None and row.get("unique_id") is not None:
            return row["unique_id"] == item["unique_id"]
        return row.get(self.text_key) == item.get(self.text_key)

    def similarities(self, item: dict) -> list[float]:
        """Similarity of `item` to every bank problem, in bank order."""
        tokens = tokenize(item.get(self.text_key) or "")
        if self._tfidf is not None:
            vec = self._tfidf.vector(tokens)
            return [TfIdf.cosine(vec, v) for v in self._tfidf.vectors]
        words = set(tokens)
        return [jaccard(words, s) for s in self._sets]

    def candidates(self, item: dict) -> list[int]:
        """Bank indexes eligible for `item`'s exam: others, same-tag ones first if enough exist."""
        others = [n for n in range(len(self.exam_bank)) if not self._is_self(item, n)]
        tags = parse_tags(item.get(self.tag_key)) if self.tag_key else frozenset()
        if tags:
            match = (lambda t: tags <= t) if self.tag_match == "all" else (lambda t: bool(tags & t))
            same = [n for n in others if match(self._tags[n])]
            if len(same) >= self.num_exam_questions:
                return same
        return others

    def make_exam_questions(self, teaching_items):
        exam = []
        for item in teaching_items:
            pool = self.candidates(item)
            if len(pool) < self.num_exam_questions:
                raise LbtError(f"exam_maker_cfg.num_exam_questions: {self.num_exam_questions} asked but the exam "
                               f"bank has only {len(pool)} other problem(s) for {item.get('unique_id')!r}")
            sims = self.similarities(item)
            ranked = sorted(pool, key=lambda n: (-round(sims[n], 12), n))
            exam.extend(self.exam_bank[n] for n in ranked[: self.num_exam_questions])
        return exam * self.num_repetitions


@exam_makers.register("ques_similarity")
class QuesSimilarityExamMaker(ExamMaker):
    """The seed's ``ques_similarity``: the k nearest bank questions to each teaching question (k shared
    among the teaching items as in the seed), each asked `num_repetitions` times. As in the seed the
    teaching question itself counts when it is in the bank.

    The embedder is local: TF-IDF over the bank (default), or a sentence-transformers model when
    `sentence_transformers_model_name` names a directory on disk (lbt downloads nothing; the seed's
    default hub name ``all-mpnet-base-v2`` must be replaced by a local copy). A `knn_pickle_path` (the
    seed's precomputed ``{question: [(index, question), ...]}``) is used instead when given.

    Args:
        exam_bank_dataset: The exam bank.
        selected_indexes: Only these bank rows are used.
        sentence_transformers_model_name: A local sentence-transformers model directory; None: TF-IDF.
        knn_pickle_path: The seed's kNN pickle (only load pickles you made: unpickling runs code).
        num_exam_questions: Neighbours in all (the seed's default 1).
        num_repetitions: How often each is asked (the seed's default 8).

    Example:
        >>> bank = [{"question": q, "answer": "1"} for q in ["sum two numbers", "sort a list", "sum of numbers"]]
        >>> [e["question"] for e in QuesSimilarityExamMaker(bank, num_exam_questions=2, num_repetitions=1)
        ...     .make_exam_questions([{"question": "sum two numbers"}])]
        ['sum two numbers', 'sum of numbers']
    """

    def __init__(self, exam_bank_dataset: list[dict], selected_indexes=None,
                 sentence_transformers_model_name: str | None = None, knn_pickle_path: str | None = None,
                 num_exam_questions: int = 1, num_repetitions: int = 8):
        super().__init__(exam_bank_dataset, selected_indexes)
        if num_exam_questions < 1 or num_repetitions < 1:
            raise LbtError("exam_maker_cfg: num_exam_questions and num_repetitions must be >= 1")
        self.num_exam_questions = num_exam_questions
        self.num_repetitions = num_repetitions
        self.knn = None
        self._embed = None
        if knn_pickle_path:
            import os
            import pickle

            if not os.path.isfile(knn_pickle_path):
                raise LbtError(f"exam_maker_cfg.knn_pickle_path: {knn_pickle_path} is not a file (omit it to "
                               "compute neighbours with the local embedder)")
            try:
                with open(knn_pickle_path, "rb") as fh:
                    self.knn = pickle.load(fh)
            except Exception as exc:
                raise LbtError(f"exam_maker_cfg.knn_pickle_path: {knn_pickle_path}: not a kNN pickle ({exc})") from None
        elif sentence_transformers_model_name:
            self._embed = _sentence_transformer(sentence_transformers_model_name)
            import numpy as np

            vecs = np.asarray(self._embed([r["question"] for r in self.exam_bank]), dtype="float32")
            self._vectors = vecs
        else:
            self._tfidf = TfIdf([tokenize(r["question"]) for r in self.exam_bank])

    def neighbours(self, question: str, k: int) -> list[int]:
        """Indexes of the `k` bank questions most similar to `question` (inner product; ties: bank order)."""
        if self._embed is not None:
            sims = (self._vectors @ self._embed([question])[0]).tolist()
        else:
            vec = self._tfidf.vector(tokenize(question))
            sims = [TfIdf.cosine(vec, v) for v in self._tfidf.vectors]
        return sorted(range(len(sims)), key=lambda n: (-round(sims[n], 12), n))[:k]

    def make_exam_questions(self, teaching_items):
        from .makers import allocate

        self._need_items(teaching_items, "ques_similarity")
        ids: list[int] = []
        for item, k in zip(teaching_items, allocate(len(teaching_items), self.num_exam_questions)):
            if k == 0:
                continue
            if self.knn is not None:
                near = self.knn.get(item["question"])
                if near is None:
                    raise LbtError("exam_maker_cfg.knn_pickle_path: the pickle has no entry for a teaching question")
                for idx, question in near[:k]:
                    if not 0 <= idx < len(self.exam_bank) or self.exam_bank[idx]["question"] != question:
                        raise LbtError(f"exam_maker_cfg.knn_pickle_path: entry {idx} does not match the exam bank")
                    ids.extend([idx] * self.num_repetitions)  # the seed's order on this path
            else:
                ids.extend(self.neighbours(item["question"], k) * self.num_repetitions)
        return [self.exam_bank[i] for i in ids]


def _sentence_transformer(name: str):
    import os

    if not os.path.isdir(name):
        raise LbtError(f"exam_maker_cfg.sentence_transformers_model_name: {name} is not a model directory on disk "
                       "(lbt downloads nothing; give a local copy, or omit it for the local TF-IDF embedder)")
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError:
        raise LbtError("exam_maker_cfg.sentence_transformers_model_name: needs `pip install sentence-transformers` "
                       "(or omit it for the local TF-IDF embedder)") from None
    model = SentenceTransformer(name, device="cpu")
    return lambda texts: model.encode(list(texts), show_progress_bar=False)
