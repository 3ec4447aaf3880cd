"""A zero-cost classify engine: a benchmark test double, not a product option.

:class:`ZeroEngine` implements the :class:`newswatch.stream.classify.Engine` protocol and
answers instantly with fixed predictions, so ``bench/ceiling.py`` measures what the classify
stage itself costs per post once the model is gone (as it all but is on a GPU worker). The
predictions vary with the text (a CRC-32 of it picks one of the 20 topics × 3 sentiments of
the shipped model's labels), so the windows downstream get a realistic spread of keys, and
the same text gets the same prediction in every process and run.

>>> engine = ZeroEngine()
>>> a, b = engine.predict(["$AAPL beats estimates", "$AAPL beats estimates"])
>>> a == b and a.topic in TOPICS and a.sentiment in SENTIMENTS
True
>>> engine.predict(["   "])[0].error is not None
True
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence

from newswatch.models.engine import EMPTY_TEXT_ERROR, Prediction

__all__ = ["SENTIMENTS", "TOPICS", "ZeroEngine"]

#: The shipped model's topic labels (``models/default/labels.json``).
TOPICS = (
    "Analyst Update",
    "Fed | Central Banks",
    "Company | Product News",
    "Treasuries | Corporate Debt",
    "Dividend",
    "Earnings",
    "Energy | Oil",
    "Financials",
    "Currencies",
    "General News | Opinion",
    "Gold | Metals | Materials",
    "IPO",
    "Legal | Regulation",
    "M&A | Investments",
    "Macro",
    "Markets",
    "Politics",
    "Personnel Change",
    "Stock Commentary",
    "Stock Movement",
)
SENTIMENTS = ("bearish", "bullish", "neutral")

# Per sentiment: (bearish, bullish, neutral) probabilities; score = P(bullish) - P(bearish).
_PROBS = {"bearish": (0.7, 0.1, 0.2), "bullish": (0.1, 0.75, 0.15), "neutral": (0.15, 0.15, 0.7)}


def _prediction(topic: str, sentiment: str, topic_prob: float) -> Prediction:
    bear, bull, neutral = _PROBS[sentiment]
    return Prediction(
        topic=topic,
        topic_prob=topic_prob,
        sentiment=sentiment,
        sentiment_probs={"bearish": bear, "bullish": bull, "neutral": neutral},
        score=round(bull - bear, 6),
    )


#: Every answer, built once: topic i, sentiment j at index i * 3 + j.
_TABLE = tuple(_prediction(t, s, 0.5 + 0.02 * i) for i, t in enumerate(TOPICS) for s in SENTIMENTS)
_BLANK = Prediction(
    "", 0.0, "neutral", {"bearish": 0.0, "bullish": 0.0, "neutral": 1.0}, 0.0, EMPTY_TEXT_ERROR
)


class ZeroEngine:
    """Instant, deterministic predictions (see the module docstring)."""

    model_version = "zero-engine"
    backend = "zero"

    def predict(self, texts: Sequence[str]) -> list[Prediction]:
        """One prediction per text, picked by a CRC-32 of the text; blank texts get the engine's error."""
        table, n = _TABLE, len(_TABLE)
        return [
            table[zlib.crc32(t.encode("utf-8", "surrogatepass")) % n] if t and not t.isspace() else _BLANK
            for t in texts
        ]

    def close(self) -> None:
        """Nothing to release (the real engine's ``close``)."""
