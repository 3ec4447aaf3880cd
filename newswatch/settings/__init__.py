"""One typed settings tree for every stage.

Sources, highest precedence first: keyword arguments, environment variables
``NEWSWATCH_<SECTION>_<OPTION>`` (for example ``NEWSWATCH_KAFKA_BOOTSTRAP_SERVERS``),
a YAML file and the defaults. :func:`load_settings` hands the YAML file (``--config FILE``,
else the file named by ``NEWSWATCH_CONFIG``) to a ``YamlConfigSettingsSource`` explicitly;
the process environment is only read, never written.
Every section is frozen; every duration or size names its unit. Every option
is documented in ``docs/configuration.md``. Cross-section rules are checked when the
tree is built (``alerts.windows`` must name windows the ``aggregate`` section produces).
"""

from __future__ import annotations

import difflib
import os
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
    YamlConfigSettingsSource,
)

from newswatch.errors import ConfigError
from newswatch.settings._env import env_error_message
from newswatch.settings.alerts import AlertSettings, NotifySettings
from newswatch.settings.models import ModelSettings
from newswatch.settings.stream import AggregateSettings, ClassifySettings, DemoSettings

__all__ = [
    "CONFIG_ENV",
    "STAGE_METRICS_PORTS",
    "KafkaSettings",
    "MetricsSettings",
    "Settings",
    "TopicSettings",
    "load_settings",
]

#: Environment variable naming the YAML file when no ``--config FILE`` is given.
CONFIG_ENV = "NEWSWATCH_CONFIG"

#: The YAML file of the :class:`Settings` being built by :func:`load_settings` (None: no file).
#: A context variable, so concurrent builds in threads or tasks never see each other's file.
_YAML_FILE: ContextVar[Path | None] = ContextVar("newswatch_settings_yaml_file", default=None)


class KafkaSettings(BaseModel):
    """Connection to the Kafka cluster (or the embedded broker)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    bootstrap_servers: str = Field("127.0.0.1:9092", description="Comma-separated host:port list.")
    client_id: str = Field("newswatch", description="Client id prefix sent to the brokers.")
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        "PLAINTEXT", description="Passed to every Kafka client as is."
    )
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = Field(
        None, description="SASL mechanism when security_protocol is SASL_*."
    )
    sasl_plain_username: str | None = Field(None, description="SASL user name.")
    sasl_plain_password: SecretStr | None = Field(None, description="SASL password (secret).")
    ssl_cafile: Path | None = Field(None, description="CA bundle to verify the brokers.")
    ssl_certfile: Path | None = Field(None, description="Client certificate (mutual TLS).")
    ssl_keyfile: Path | None = Field(None, description="Client private key (mutual TLS).")
    partitions: int = Field(4, ge=1, description="Partitions for every topic newswatch creates.")
    replication_factor: int = Field(1, ge=1, description="Replication factor for topics newswatch creates.")
    broker_compat: Literal["kafka", "tansu"] = Field(
        "kafka",
        description=(
            "'tansu' works around the embedded broker's ListOffsets bug (end offsets read from fetch "
            "high-water marks). The embedded broker turns it on; leave 'kafka' for real clusters."
        ),
    )
    request_timeout_ms: int = Field(30_000, ge=1_000, description="Kafka request timeout.")
    session_timeout_ms: int = Field(
        10_000,
        ge=1_000,
        description="Consumer-group session timeout (6000 joins fast on the embedded broker).",
    )
    heartbeat_interval_ms: int = Field(1_000, ge=100, description="Consumer-group heartbeat interval.")

    def client_kwargs(self) -> dict[str, Any]:
        """Keyword arguments shared by every aiokafka client (security passes through)."""
        kwargs: dict[str, Any] = {
            "bootstrap_servers": self.bootstrap_servers,
            "security_protocol": self.security_protocol,
            "request_timeout_ms": self.request_timeout_ms,
        }
        if self.sasl_mechanism:
            kwargs["sasl_mechanism"] = self.sasl_mechanism
            kwargs["sasl_plain_username"] = self.sasl_plain_username
            kwargs["sasl_plain_password"] = (
                self.sasl_plain_password.get_secret_value() if self.sasl_plain_password else None
            )
        if self.security_protocol in ("SSL", "SASL_SSL"):
            from aiokafka.helpers import create_ssl_context

            kwargs["ssl_context"] = create_ssl_context(
                cafile=str(self.ssl_cafile) if self.ssl_cafile else None,
                certfile=str(self.ssl_certfile) if self.ssl_certfile else None,
                keyfile=str(self.ssl_keyfile) if self.ssl_keyfile else None,
            )
        return kwargs


class TopicSettings(BaseModel):
    """Names of the Kafka topics the stages read and write."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    posts: str = Field("newswatch.posts", description="Raw JSON posts (input).")
    scored: str = Field("newswatch.scored", description="Posts with topic and sentiment.")
    panes: str = Field(
        "newswatch.panes",
        description="Pre-aggregated window panes, one record per classify batch and partition "
        "(the aggregator's input).",
    )
    windows: str = Field("newswatch.windows", description="Closed window statistics.")
    alerts: str = Field("newswatch.alerts", description="Alert events (firing/resolved), durable.")
    dead_letter: str = Field("newswatch.dlq", description="Rejected input with the reason and raw bytes.")
    alerts_dead_letter: str = Field("newswatch.alerts.dlq", description="Alerts that exhausted retries.")

    def all(self) -> list[str]:
        """Every topic name, for creating them up front."""
        return [
            self.posts,
            self.scored,
            self.panes,
            self.windows,
            self.alerts,
            self.dead_letter,
            self.alerts_dead_letter,
        ]


#: Each stage's default metrics port (``metrics.port`` unset), so stages started side by side
#: on one host never collide. Keys are the stages' ``stage`` label (``alerts run`` is ``detect``).
STAGE_METRICS_PORTS: dict[str, int] = {"classify": 9400, "aggregate": 9401, "detect": 9402, "notify": 9403}


class MetricsSettings(BaseModel):
    """The HTTP endpoint each stage serves: ``/metrics``, ``/healthz``, ``/readyz``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    host: str = Field("127.0.0.1", description="Bind address; 0.0.0.0 in containers.")
    port: int | None = Field(
        None,
        ge=0,
        le=65535,
        description=(
            "Unset (null): the stage's own default, classify 9400, aggregate 9401, alerts run 9402, "
            "notify 9403; a number applies to whichever stage reads it; 0 picks a free port."
        ),
    )
    top_k_entities: int = Field(50, ge=1, description="Entities exported as labelled series (bounded).")

    def port_for(self, stage: str) -> int:
        """The port ``stage`` serves on: :attr:`port` when set, else its :data:`STAGE_METRICS_PORTS` entry."""
        if self.port is not None:
            return self.port
        return STAGE_METRICS_PORTS.get(stage, STAGE_METRICS_PORTS["classify"])


class Settings(BaseSettings):
    """The whole configuration of a newswatch process."""

    model_config = SettingsConfigDict(
        env_prefix="NEWSWATCH_",
        env_nested_delimiter="_",
        env_nested_max_split=1,
        frozen=True,
        extra="forbid",
        hide_input_in_errors=True,  # inputs hold secrets (sink URLs, passwords)
    )

    kafka: KafkaSettings = KafkaSettings()
    topics: TopicSettings = TopicSettings()
    classify: ClassifySettings = ClassifySettings()
    models: ModelSettings = ModelSettings()
    aggregate: AggregateSettings = AggregateSettings()
    alerts: AlertSettings = AlertSettings()
    notify: NotifySettings = NotifySettings()
    metrics: MetricsSettings = MetricsSettings()
    demo: DemoSettings = DemoSettings()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Keyword arguments, then the environment, then the YAML file :func:`load_settings` passed."""
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        yaml_file = _YAML_FILE.get()
        if yaml_file is not None:
            sources.append(YamlConfigSettingsSource(settings_cls, yaml_file=yaml_file))
        return tuple(sources)

    @model_validator(mode="after")
    def _alert_windows_are_aggregated(self) -> Settings:
        """``alerts.windows`` must be windows the aggregator writes, or the detectors see nothing."""
        produced = self.aggregate.window_names()
        unknown = [w for w in self.alerts.windows if w not in produced]
        if unknown:
            raise ValueError(
                f"alerts.windows {list(unknown)} are not windows the aggregator produces: "
                f"aggregate.tumbling_ms and aggregate.hopping give {list(produced)}; set alerts.windows "
                f"to some of {list(produced)}, or change aggregate.tumbling_ms/aggregate.hopping to "
                "produce the windows named"
            )
        return self


def _problem(err: Any) -> str:
    """One validation error as ``section.key: message``, with the closest valid key for a typo."""
    loc = [str(p) for p in err["loc"]]
    name = ".".join(loc) or "settings"
    if err["type"] != "extra_forbidden":
        return f"{name}: {err['msg']}"
    fields: dict[str, Any] = dict(Settings.model_fields)
    for part in loc[:-1]:  # walk down the sections to the model that refused the key
        annotation = getattr(fields.get(part), "annotation", None)
        fields = (
            dict(annotation.model_fields)
            if isinstance(annotation, type) and issubclass(annotation, BaseModel)
            else {}
        )
    valid = sorted(fields)
    close = difflib.get_close_matches(loc[-1], valid, n=1, cutoff=0.6)
    env = "NEWSWATCH_" + "_".join(loc).upper()
    hint = f"; did you mean {'.'.join([*loc[:-1], close[0]])}?" if close else ""
    return f"{name} (or {env}) is not an option{hint}"


def load_settings(config_file: str | Path | None = None, **overrides: Any) -> Settings:
    """Build :class:`Settings` from overrides, environment and an optional YAML file.

    ``config_file`` defaults to the file named by ``NEWSWATCH_CONFIG`` (unset: no file); it
    is given to the YAML source of :meth:`Settings.settings_customise_sources` directly.
    Raises :class:`~newswatch.errors.ConfigError` with a readable message when a value is invalid.
    """
    if config_file is None:
        config_file = os.environ.get(CONFIG_ENV) or None
    path = Path(config_file) if config_file is not None else None
    if path is not None and not path.is_file():
        raise ConfigError(f"config file {path} does not exist; pass an existing YAML file")
    token = _YAML_FILE.set(path)
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        where = f" (from {path} and NEWSWATCH_* variables)" if path else " (from NEWSWATCH_* variables)"
        problems = "; ".join(_problem(err) for err in exc.errors())
        raise ConfigError(f"invalid settings{where}: {problems}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or type(exc).__name__
        raise ConfigError(f"config file {path} is not valid YAML:{at}: {problem}") from None
    except SettingsError as exc:  # an environment variable that is not the JSON its option takes
        raise ConfigError(env_error_message(Settings, "NEWSWATCH_", exc)) from None
    finally:
        _YAML_FILE.reset(token)
