"""One text clean-up: training and serving turn the same post into the same tokens."""

from __future__ import annotations

import csv
import html
import json
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from newswatch.models.artifacts import base_model_dir
from newswatch.models.data import load_split
from newswatch.models.engine import ClassifierEngine
from newswatch.models.text import INVISIBLE, URL, clean_text, hf_encode
from newswatch.stream.decode import Decoded, PostDecoder

#: Raw posts as a feed might carry them: HTML entities, links, zero-width and bidi characters
#: inside words, control characters, odd whitespace, emoji, CJK, and one far over 64 tokens.
RAW_POSTS = [
    "Net\u200bflix beats; $NFLX up 8% &amp; guidance raised https://t.co/AbC123 \u202eevil\u202c",
    "Fed&#39;s Powell:\r\n\t&quot;rates stay&quot;\u00a0higher\x07 for longer &lt;b&gt;",
    "日本株 $7203 は上昇 — Toyota 📈\u2066$TM\u2069 via https://example.com/a?b=c&amp;d=e",
    "M&amp;A wave: " + " ".join(f"deal{i} &amp; co" for i in range(80)),
]


@pytest.fixture(scope="module")
def engine() -> Iterator[ClassifierEngine]:
    with ClassifierEngine.load() as e:
        yield e


def _training_tokens(tmp_path: Path, texts: list[str], max_length: int) -> list[list[int]]:
    """The training path: the dataset CSV read by ``load_split``, tokenized as ``train`` does."""
    from transformers import AutoTokenizer

    folder = tmp_path / "twitter_financial_news_topic"
    folder.mkdir()
    with (folder / "topic_train.csv").open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["text", "label"])
        writer.writerows([t, 0] for t in texts)
    data = load_split(tmp_path, "topic", "train")
    assert data.texts == texts
    tokenizer = AutoTokenizer.from_pretrained(str(base_model_dir()))  # `newswatch train`'s default --base
    ids: list[list[int]] = hf_encode(tokenizer, data.texts, max_length)["input_ids"]
    return ids


def _serving_tokens(engine: ClassifierEngine, texts: list[str]) -> list[list[int]]:
    """The serving path: a posts-topic message decoded, then what the classify stage hands the engine."""
    decoder = PostDecoder()
    handed: list[str] = []
    for i, text in enumerate(texts):
        raw = json.dumps(
            {"id": f"p{i}", "text": text, "source": "wire", "published_at": "2026-01-02T10:00:00Z"}
        )
        decoded = decoder.decode(raw.encode())
        assert isinstance(decoded, Decoded), decoded
        handed.append(decoded.post.text)  # ClassifyWorker passes the original text to engine.predict
    return engine.encode(handed)


def test_training_and_serving_produce_the_same_tokens(engine: ClassifierEngine, tmp_path: Path) -> None:
    train_ids = _training_tokens(tmp_path, RAW_POSTS, engine.max_length)
    serve_ids = _serving_tokens(engine, RAW_POSTS)
    assert serve_ids == train_ids
    assert len(serve_ids[-1]) == engine.max_length  # the long post is truncated alike
    # the clean-up did something on these posts: no entity or link reaches the model
    tokenizer_text = clean_text(RAW_POSTS[0], engine.max_length)
    assert "&amp;" not in tokenizer_text and "https" not in tokenizer_text and "\u200b" not in tokenizer_text


def test_decoder_and_engine_agree_on_empty_text(engine: ClassifierEngine) -> None:
    decoder = PostDecoder()
    raw = json.dumps(
        {"id": "e", "text": "\u200b\u202e https://t.co/x ", "source": "w", "published_at": "2026-01-02"}
    )
    rejected = decoder.decode(raw.encode())
    assert not isinstance(rejected, Decoded) and rejected.reason == "empty_text"
    assert clean_text("\u200b\u202e https://t.co/x ", engine.max_length) == ""


def test_clean_text_once() -> None:
    assert clean_text("Fed hikes &amp; holds  https://t.co/x1") == "Fed hikes & holds"
    assert clean_text("Net\u200bflix\u202e up") == "Net flix up"  # a space, as the decoder always did
    assert clean_text("a\r\nb\u2028c") == "a b c"
    assert clean_text("x" * 100, max_chars=10) == "x" * 10
    assert clean_text("abcd efgh", max_chars=5) == "abcd"  # no trailing space after the cut
    assert len(clean_text("word " * 10_000, 64)) <= 64 * 32


def _three_substitutions(text: str, max_chars: int) -> str:
    """clean_text as three regex substitutions (how it was written before its fast path)."""
    text = html.unescape(text[: max_chars * 2])
    text = INVISIBLE.sub(" ", text)
    text = URL.sub(" ", text)
    return re.sub(r"\s+", " ", text).strip()[:max_chars].rstrip()


def test_split_splits_on_exactly_what_backslash_s_matches() -> None:
    """clean_text collapses whitespace with str.split(): the same characters as ``\\s+``."""
    space = re.compile(r"\s")
    assert [c for c in map(chr, range(sys.maxunicode + 1)) if bool(space.match(c)) != c.isspace()] == []


_HOSTILE = "\x00\x07\t\n\r\x0b\x0c\x1c\x1f\x7f\x85\xa0\u1680\u2000\u200b\u2028\u202e\u3000\ufeff\ud800\ue000"


_PIECES = st.lists(
    st.text(max_size=8)
    | st.sampled_from([*_HOSTILE, "&amp;", "&#39;", "http://x.y/z ", "https://", " ", "\u00e9"]),
    max_size=30,
).map("".join)


@settings(max_examples=500, deadline=None)
@given(_PIECES, st.integers(1, 200))
def test_clean_text_is_the_three_substitutions(text: str, max_chars: int) -> None:
    assert clean_text(text, max_chars=max_chars) == _three_substitutions(text, max_chars)
