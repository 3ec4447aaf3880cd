"""The shipped int8 model through the engine: contract, accuracy smoke check, bad input."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from newswatch.models.artifacts import default_model_dir
from newswatch.models.data import load_split
from newswatch.models.engine import ClassifierEngine, Prediction, usable_cores
from newswatch.models.errors import ModelError, ModelNotFoundError
from newswatch.settings.models import ModelSettings


@pytest.fixture(scope="module")
def engine() -> Iterator[ClassifierEngine]:
    e = ClassifierEngine.load()
    yield e
    e.close()


def _check(p: Prediction, topics: tuple[str, ...]) -> None:
    assert p.error is None
    assert p.topic in topics and 0.0 < p.topic_prob <= 1.0
    assert set(p.sentiment_probs) == {"bearish", "bullish", "neutral"}
    assert abs(sum(p.sentiment_probs.values()) - 1.0) < 1e-4
    assert p.sentiment == max(p.sentiment_probs, key=p.sentiment_probs.__getitem__)
    assert -1.0 <= p.score <= 1.0
    assert abs(p.score - (p.sentiment_probs["bullish"] - p.sentiment_probs["bearish"])) < 1e-6


def test_default_load_is_the_shipped_int8_model(engine: ClassifierEngine) -> None:
    assert engine.backend == "onnx"
    assert engine.model_version.endswith("-int8")
    assert engine.info.path == default_model_dir()
    size = sum(f.stat().st_size for f in default_model_dir().rglob("*") if f.is_file())
    assert size < 30 * 2**20


def test_serving_does_not_import_torch() -> None:
    import subprocess

    code = (
        "import sys; from newswatch.models.engine import ClassifierEngine; "
        "e = ClassifierEngine.load(); e.predict(['Fed hikes rates']); "
        "bad = [m for m in ('torch', 'transformers') if m in sys.modules]; print(bad); sys.exit(bool(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr


def test_quality_floor_on_validation_texts(engine: ClassifierEngine, data_dir: Path) -> None:
    """The shipped model is trained: full-split figures are in its card (topic 0.80, sentiment 0.77)."""
    for task in ("topic", "sentiment"):
        data = load_split(data_dir, task, "valid", limit=400)
        preds = engine.predict(data.texts)
        if task == "topic":
            got = [engine.topics.index(p.topic) for p in preds]
        else:
            got = [engine.info.sentiments.index(p.sentiment) for p in preds]
        for p in preds:
            _check(p, engine.topics)
        accuracy = sum(g == y for g, y in zip(got, data.labels, strict=True)) / len(got)
        assert accuracy >= 0.7, (task, accuracy)


def test_order_and_any_batch_size(engine: ClassifierEngine, data_dir: Path) -> None:
    """Results follow their texts whatever the batch size and order.

    Dynamic int8 quantization scales activations per batch, so a text's probabilities move
    slightly with the batch around it (up to 0.06 in score on the shipped three-epoch model,
    measured; the bound below leaves room for that, see the model card); each text's logits
    stay far closer to its own single-text logits than to any other text's.
    """
    texts = load_split(data_dir, "topic", "valid", limit=150).texts
    batched = engine.logits(texts)
    single = np.concatenate([engine.logits([t]) for t in texts[:40]])
    dist = np.abs(batched[:40, None, :] - single[None, :, :]).max(axis=2)
    assert (dist.argmin(axis=1) == np.arange(40)).all()
    preds = engine.predict(texts)
    backwards = engine.predict(texts[::-1])[::-1]
    assert len(preds) == 150
    for a, b in zip(preds, backwards, strict=True):
        assert abs(a.score - b.score) < 0.1
        if max(a.topic_prob, b.topic_prob) > 0.6:
            assert a.topic == b.topic
    assert engine.predict([]) == []


def test_thread_safe(engine: ClassifierEngine) -> None:
    texts = [
        "Gold rallies as dollar weakens",
        "Bank of Japan keeps rates unchanged",
        "Tesla recalls cars",
    ] * 10
    expected = [p.topic for p in engine.predict(texts)]
    results: list[list[str]] = []

    def work() -> None:
        results.append([p.topic for p in engine.predict(texts)])

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert results == [expected] * 4


def test_cpu_streams_score_groups_at_once_and_keep_every_text_its_own(data_dir: Path) -> None:
    """Two CPU streams: each text's logits stay nearest its own single-text logits, results
    do not depend on the input order, repeated texts share one result, and small batches
    stay in one group."""
    texts = load_split(data_dir, "topic", "valid", limit=120).texts
    with (
        ClassifierEngine.load(ModelSettings(cpu_streams=2)) as two,
        ClassifierEngine.load(ModelSettings(cpu_streams=1)) as one,
    ):
        assert (two.streams, one.streams) == (2, 1)
        batched = two.logits(texts)
        single = np.concatenate([one.logits([t]) for t in texts[:40]])
        dist = np.abs(batched[:40, None, :] - single[None, :, :]).max(axis=2)
        assert (dist.argmin(axis=1) == np.arange(40)).all()
        # The same texts form the same groups and passes whatever their order: equal results.
        assert np.array_equal(two.logits(texts[::-1])[::-1], batched)
        labels = [(p.topic, p.sentiment) for p in two.predict(texts)]
        reference = [(p.topic, p.sentiment) for p in one.predict(texts)]
        assert sum(a == b for a, b in zip(labels, reference, strict=True)) >= 0.9 * len(texts)
        few = texts[:7]  # under two groups' worth of texts: one group, the same passes as one stream
        assert np.array_equal(two.logits(few), one.logits(few))
        reposted = two.logits([*texts[:30], texts[3], texts[3]])  # a text that comes again is scored once
        assert np.array_equal(reposted[30], reposted[3]) and np.array_equal(reposted[31], reposted[3])
    with pytest.raises(ModelError, match="closed"):
        two.logits(texts)


def test_auto_streams_are_one_per_usable_core(engine: ClassifierEngine, tmp_path: Path) -> None:
    assert engine.streams == min(usable_cores(), 8)
    limit = tmp_path / "cpu.max"
    limit.write_text("150000 100000\n")  # a container CPU limit of 1.5 cores
    assert usable_cores(limit) == min(2, usable_cores())
    limit.write_text("max 100000\n")
    assert usable_cores(limit) == usable_cores(tmp_path / "absent")


@pytest.mark.parametrize("text", ["", " ", "\n\t  \r\n", "\u3000"])
def test_blank_text_gets_an_error_result_for_that_item_only(engine: ClassifierEngine, text: str) -> None:
    good, blank, good2 = engine.predict(["Oil prices jump after OPEC cut", text, "Netflix stock falls"])
    _check(good, engine.topics)
    _check(good2, engine.topics)
    assert blank.error and "empty" in blank.error
    assert blank.topic == "" and blank.sentiment == "neutral" and blank.score == 0.0


def test_megabyte_text_is_truncated_not_rejected(engine: ClassifierEngine) -> None:
    huge = "Apple earnings beat expectations and the stock rallies. " * 19_000  # ≈ 1 MB
    assert len(huge) > 1_000_000
    t0 = time.perf_counter()
    (big,) = engine.predict([huge])
    assert time.perf_counter() - t0 < 5.0
    _check(big, engine.topics)
    # Truncation keeps the first max_length tokens: the same result as the text's first 2,000 chars.
    (head,) = engine.predict([huge[:2_000]])
    assert (big.topic, big.sentiment) == (head.topic, head.sentiment)
    assert abs(big.score - head.score) < 1e-6


@pytest.mark.parametrize(
    "text",
    [
        "bad \ud800 surrogate \udfff here",  # lone surrogates: not encodable as UTF-8
        "🚀🚀🚀📈📈",  # emoji only
        "Die Aktie der Deutschen Bank fällt nach den Quartalszahlen",  # German
        "日本銀行は金利を据え置いた",  # Japanese
        "Нефть дорожает",  # Russian
        "\x00\x01 control \x7f chars",
        "https://t.co/abc123",  # only a link: cleans to nothing, still classified
        "a" * 5000,  # one enormous "word"
    ],
)
def test_odd_input_does_not_crash(engine: ClassifierEngine, text: str) -> None:
    (p,) = engine.predict([text])
    _check(p, engine.topics)


def test_missing_model_dir_is_a_clear_error(tmp_path: object) -> None:
    with pytest.raises(ModelNotFoundError, match="not a newswatch model directory"):
        ClassifierEngine.load(ModelSettings(dir=tmp_path))  # type: ignore[arg-type]


def test_missing_variant_is_a_clear_error() -> None:
    with pytest.raises(ModelNotFoundError, match="newswatch export"):
        ClassifierEngine.load(ModelSettings(variant="fp16"))


def test_closed_engine_refuses_and_close_is_idempotent() -> None:
    e = ClassifierEngine.load()
    e.close()
    e.close()
    with pytest.raises(Exception, match="closed"):
        e.predict(["text"])


@pytest.mark.parametrize("spinning", [False, True])
def test_intra_op_spinning_follows_the_setting(spinning: bool) -> None:
    """Off by default: a classify worker shares its cores with its event loop and other processes."""
    assert ModelSettings().intra_op_spinning is False
    engine = ClassifierEngine.load(ModelSettings(intra_op_spinning=spinning))
    try:
        session = engine._backend._session  # type: ignore[union-attr]
        entry = session.get_session_options().get_session_config_entry("session.intra_op.allow_spinning")
        assert entry == ("1" if spinning else "0")
    finally:
        engine.close()
