"""``newswatch predict`` and ``newswatch evaluate``: output shape and error handling."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from newswatch.cli.main import main


def _lines(out: str) -> list[dict]:
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def test_predict_json_lines(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["predict", "--json", "Fed cuts rates by 50bp", "   "]) == 0
    rows = _lines(capsys.readouterr().out)
    assert len(rows) == 2
    first = rows[0]
    assert set(first) == {"text", "topic", "topic_prob", "sentiment", "sentiment_probs", "score"}
    assert first["text"] == "Fed cuts rates by 50bp"
    assert set(first["sentiment_probs"]) == {"bearish", "bullish", "neutral"}
    assert -1 <= first["score"] <= 1
    assert "empty" in rows[1]["error"]


def test_predict_reads_csv_and_jsonl(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    csv_file = tmp_path / "in.csv"
    csv_file.write_text('id,text\n1,"Gold hits record high"\n2,"Oil falls, OPEC, again"\n', encoding="utf-8")
    jsonl = tmp_path / "in.jsonl"
    jsonl.write_text('{"text": "Tesla deliveries beat"}\n\n"plain string line"\n', encoding="utf-8")
    assert main(["predict", "--json", "--input", str(csv_file)]) == 0
    assert [r["text"] for r in _lines(capsys.readouterr().out)] == [
        "Gold hits record high",
        "Oil falls, OPEC, again",
    ]
    assert main(["predict", "--json", "--input", str(jsonl)]) == 0
    assert [r["text"] for r in _lines(capsys.readouterr().out)] == [
        "Tesla deliveries beat",
        "plain string line",
    ]


@pytest.mark.parametrize(
    ("content", "suffix", "message"),
    [
        ("a,b\n1,2\n", ".csv", "no 'text' column"),
        ("{bad json\n", ".jsonl", "not JSON"),
        ("x", ".txt", "unsupported"),
    ],
)
def test_predict_bad_input_file_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str, suffix: str, message: str
) -> None:
    f = tmp_path / f"in{suffix}"
    f.write_text(content, encoding="utf-8")
    assert main(["predict", "--input", str(f)]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_predict_without_text_is_an_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["predict"]) == 2
    assert "no text given" in capsys.readouterr().err


def test_evaluate_json_shape(data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["evaluate", "--json", "--limit", "150", "--data", str(data_dir)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["variant"] == "int8" and out["model"].endswith("-int8")
    for task in ("topic", "sentiment"):
        assert set(out[task]) >= {"accuracy", "macro_f1", "weighted_f1"}
        assert out[task]["n"] == 150
        assert out[task]["accuracy"] > 0.6  # the shipped model is trained, not random


def test_evaluate_unknown_model_dir(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["evaluate", "--json", "--model", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "not a newswatch model directory" in err and "Traceback" not in err
