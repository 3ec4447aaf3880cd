"""The two labelled datasets (topic, sentiment): loading and the tuning hold-out."""

from __future__ import annotations

import csv
import json
import random
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from newswatch.errors import ConfigError
from newswatch.models.errors import DataError
from newswatch.models.inputs import read_texts
from newswatch.models.text import URL

__all__ = [
    "Example",
    "TaskData",
    "labelled_texts",
    "load_split",
    "load_topic_names",
    "load_transfer_texts",
    "near_duplicate_key",
    "split_holdout",
]

TOPIC = 0
SENTIMENT = 1
TRANSFER = 2  # an unlabelled text: only the teachers' soft labels train on it


@dataclass(frozen=True, slots=True)
class Example:
    """One labelled text; ``task`` is 0 (topic) or 1 (sentiment)."""

    text: str
    label: int
    task: int


@dataclass(frozen=True)
class TaskData:
    """Texts and labels of one split of one task."""

    texts: list[str]
    labels: list[int]

    def examples(self, task: int) -> list[Example]:
        """The split as :class:`Example` records of ``task``."""
        return [Example(t, y, task) for t, y in zip(self.texts, self.labels, strict=True)]


_FILES = {
    ("topic", "train"): "twitter_financial_news_topic/topic_train.csv",
    ("topic", "valid"): "twitter_financial_news_topic/topic_valid.csv",
    ("sentiment", "train"): "twitter_financial_news_sentiment/sent_train.csv",
    ("sentiment", "valid"): "twitter_financial_news_sentiment/sent_valid.csv",
}


def load_split(data_dir: Path, task: str, split: str, limit: int | None = None) -> TaskData:
    """Read ``text,label`` rows of ``task`` (topic|sentiment) and ``split`` (train|valid).

    ``limit`` keeps that many rows spread evenly over the file (the files are grouped by label).
    """
    path = Path(data_dir) / _FILES[(task, split)]
    if not path.is_file():
        raise DataError(f"dataset file {path} not found; pass --data DIR pointing at ../shared/data")
    texts: list[str] = []
    labels: list[int] = []
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        if reader.fieldnames is None or not {"text", "label"} <= set(reader.fieldnames):
            raise DataError(f"{path} must have 'text' and 'label' columns")
        for row in reader:
            texts.append(row["text"])
            labels.append(int(row["label"]))
    if limit is not None and limit < len(texts):
        keep = [int(i * len(texts) / limit) for i in range(limit)]
        texts, labels = [texts[i] for i in keep], [labels[i] for i in keep]
    return TaskData(texts, labels)


def load_topic_names(data_dir: Path) -> list[str]:
    """The 20 topic names in label order, from ``labels.json``."""
    path = Path(data_dir) / "twitter_financial_news_topic/labels.json"
    if not path.is_file():
        raise DataError(f"{path} not found; pass --data DIR pointing at ../shared/data")
    mapping = json.loads(path.read_text(encoding="utf-8"))
    return [mapping[str(i)] for i in range(len(mapping))]


def split_holdout(data: TaskData, fraction: float, seed: int) -> tuple[TaskData, TaskData]:
    """Split ``data`` into (train, hold-out) with a seeded shuffle, stratified by label."""
    rng = random.Random(seed)
    by_label: dict[int, list[int]] = {}
    for i, y in enumerate(data.labels):
        by_label.setdefault(y, []).append(i)
    held: set[int] = set()
    for idx in by_label.values():
        rng.shuffle(idx)
        held.update(idx[: round(len(idx) * fraction)])
    train = [i for i in range(len(data.texts)) if i not in held]
    hold = sorted(held)
    return (
        TaskData([data.texts[i] for i in train], [data.labels[i] for i in train]),
        TaskData([data.texts[i] for i in hold], [data.labels[i] for i in hold]),
    )


_RETWEET = re.compile(r"^rt @\w+:?")
_NON_WORD = re.compile(r"[\W_]+")


def labelled_texts(data_dir: Path) -> list[str]:
    """Every text of the labelled splits, train and validation of both tasks (what unlabelled
    ``--transfer`` texts must not repeat)."""
    return [
        t
        for task in ("topic", "sentiment")
        for split in ("train", "valid")
        for t in load_split(data_dir, task, split).texts
    ]


def near_duplicate_key(text: str) -> str:
    """``text`` lower-cased with links, punctuation and spacing removed (retweets and re-posts collide)."""
    text = URL.sub(" ", text.lower())
    text = _RETWEET.sub(" ", text.strip())
    return _NON_WORD.sub(" ", text).strip()


def load_transfer_texts(
    paths: Sequence[Path], exclude: Iterable[str], limit: int | None, seed: int
) -> list[str]:
    """Unlabelled texts from ``paths`` (CSV ``text`` column or JSON lines) for distillation.

    Near-duplicates are dropped (first kept), as is any text whose :func:`near_duplicate_key`
    equals one of ``exclude`` (the labelled splits, validation included, so no benchmark text
    is trained on even without its label). ``limit`` keeps a seeded random sample.
    """
    if limit is not None and limit < 1:
        raise DataError(f"--transfer-limit must be at least 1, got {limit}")
    seen = {near_duplicate_key(t) for t in exclude}
    seen.discard("")
    kept: list[str] = []
    for path in paths:
        try:
            texts = read_texts(Path(path))
        except ConfigError as exc:
            raise DataError(f"--transfer: {exc}") from None
        for text in texts:
            key = near_duplicate_key(text)
            if key and key not in seen:
                seen.add(key)
                kept.append(text)
    if not kept:
        raise DataError(f"--transfer {', '.join(map(str, paths))}: no text left after removing duplicates")
    if limit is not None and limit < len(kept):
        kept = random.Random(seed).sample(kept, limit)
    return kept
