"""The settings tree: environment, YAML, precedence, validation, and its generated docs."""

from __future__ import annotations

from pathlib import Path

import pytest

from newswatch import config_docs
from newswatch.errors import ConfigError
from newswatch.settings import load_settings

REPO = Path(__file__).resolve().parents[1]


def test_defaults_load_without_any_source(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NEWSWATCH_CONFIG", raising=False)
    s = load_settings()
    assert s.kafka.broker_compat == "kafka"
    assert s.models.variant == "int8"
    assert s.topics.posts in s.topics.all()


def test_environment_uses_section_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NEWSWATCH_KAFKA_BOOTSTRAP_SERVERS", "b1:9092,b2:9092")
    monkeypatch.setenv("NEWSWATCH_CLASSIFY_BATCH_SIZE", "17")
    monkeypatch.setenv("NEWSWATCH_CLASSIFY_WATCHLIST", '["Apple", "Nvidia"]')
    s = load_settings()
    assert s.kafka.bootstrap_servers == "b1:9092,b2:9092"
    assert s.classify.batch_size == 17
    assert s.classify.watchlist == ("Apple", "Nvidia")


def test_yaml_file_is_read_and_environment_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "newswatch.yaml"
    cfg.write_text("kafka:\n  bootstrap_servers: yaml:1\n  partitions: 8\nclassify:\n  batch_size: 5\n")
    monkeypatch.setenv("NEWSWATCH_CLASSIFY_BATCH_SIZE", "9")
    s = load_settings(cfg)
    assert s.kafka.bootstrap_servers == "yaml:1"
    assert s.kafka.partitions == 8
    assert s.classify.batch_size == 9


def test_invalid_value_is_a_config_error_naming_the_option(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NEWSWATCH_CLASSIFY_BATCH_SIZE", "-3")
    with pytest.raises(ConfigError, match=r"classify\.batch_size"):
        load_settings()


def test_missing_config_file_says_so(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "nope.yaml")


def test_sasl_password_is_secret_and_passed_to_clients(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NEWSWATCH_KAFKA_SECURITY_PROTOCOL", "SASL_PLAINTEXT")
    monkeypatch.setenv("NEWSWATCH_KAFKA_SASL_MECHANISM", "PLAIN")
    monkeypatch.setenv("NEWSWATCH_KAFKA_SASL_PLAIN_USERNAME", "nw")
    monkeypatch.setenv("NEWSWATCH_KAFKA_SASL_PLAIN_PASSWORD", "canary-s3cret")
    s = load_settings()
    assert "canary-s3cret" not in repr(s)
    kwargs = s.kafka.client_kwargs()
    assert kwargs["sasl_plain_password"] == "canary-s3cret"
    assert kwargs["security_protocol"] == "SASL_PLAINTEXT"


def test_configuration_docs_are_in_sync() -> None:
    committed = (REPO / "docs" / "configuration.md").read_text()
    assert committed == config_docs.render(), "run: python -m newswatch.config_docs > docs/configuration.md"


def test_alert_windows_must_be_aggregated_windows(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NEWSWATCH_CONFIG", raising=False)
    monkeypatch.setenv("NEWSWATCH_AGGREGATE_TUMBLING_MS", "10000")
    with pytest.raises(ConfigError, match=r"alerts\.windows \['tumbling_60000'\].*tumbling_10000") as info:
        load_settings()
    assert "aggregate.tumbling_ms" in str(info.value) and "hopping_300000_60000" in str(info.value)
    monkeypatch.setenv("NEWSWATCH_ALERTS_WINDOWS", '["tumbling_10000", "hopping_300000_60000"]')
    s = load_settings()
    assert s.alerts.windows == ("tumbling_10000", "hopping_300000_60000")
    assert set(s.alerts.windows) <= set(s.aggregate.window_names())


def test_window_names_follow_the_aggregate_section() -> None:
    s = load_settings(aggregate={"tumbling_ms": 5_000, "hopping": [[20_000, 5_000], [5_000, 5_000]]},
                      alerts={"windows": ["hopping_20000_5000"]})  # fmt: skip
    assert s.aggregate.window_names() == ("tumbling_5000", "hopping_20000_5000")


def test_yaml_file_is_passed_explicitly_and_environment_is_untouched(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os

    monkeypatch.delenv("NEWSWATCH_CONFIG", raising=False)
    cfg = tmp_path / "newswatch.yaml"
    cfg.write_text("classify:\n  batch_size: 5\n")
    before = dict(os.environ)
    assert load_settings(cfg).classify.batch_size == 5
    assert dict(os.environ) == before
    assert load_settings().classify.batch_size == 64  # the file does not leak into the next build
    monkeypatch.setenv("NEWSWATCH_CONFIG", str(cfg))
    assert load_settings().classify.batch_size == 5  # NEWSWATCH_CONFIG names the file when no path is given
