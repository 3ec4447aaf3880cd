"""Renders ``docs/configuration.md`` from the settings tree, so the docs cannot drift.

``python -m newswatch.config_docs > docs/configuration.md`` rewrites it; a test
checks the committed file equals the rendering.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from newswatch.settings import Settings

__all__ = ["render"]

_HEADER = """# Configuration

Every option of every stage, generated from `newswatch/settings/` and the section
files by `python -m newswatch.config_docs` (a test keeps this file in sync).

Sources, highest precedence first:

1. command-line flags of a sub-command, where it has one;
2. environment variables `NEWSWATCH_<SECTION>_<OPTION>` in upper case, e.g.
   `NEWSWATCH_KAFKA_BOOTSTRAP_SERVERS=broker-1:9092,broker-2:9092`; lists and pairs are JSON
   (`NEWSWATCH_CLASSIFY_WATCHLIST='["Apple","Nvidia"]'`);
3. a YAML file named by `--config FILE` or `NEWSWATCH_CONFIG`, with one mapping per section:

   ```yaml
   kafka:
     bootstrap_servers: broker-1:9092
     security_protocol: SASL_SSL
     sasl_mechanism: SCRAM-SHA-512
     sasl_plain_username: newswatch
   classify:
     batch_size: 128
   ```
4. the defaults below.

Secrets (`SecretStr` fields) are never printed or logged; pass them by environment
variable or a mounted file rather than in the YAML file.

Checked across sections when the settings load: every name in `alerts.windows` must be a
window the aggregator writes, `tumbling_<aggregate.tumbling_ms>` or
`hopping_<duration_ms>_<step_ms>` of a pair in `aggregate.hopping` (detectors on any other
window would see nothing). A mismatch stops the process with a message naming both sides.
"""


def _type_name(info: FieldInfo) -> str:
    ann = info.annotation
    text = getattr(ann, "__name__", None) if not getattr(ann, "__args__", None) else None
    return text or str(ann).replace("typing.", "").replace("pathlib.", "").replace("pydantic.types.", "")


def _default(info: FieldInfo) -> str:
    value: Any = info.get_default(call_default_factory=True)
    if isinstance(value, BaseModel):
        return "(section)"
    try:
        return f"`{json.dumps(value, default=str)}`"
    except TypeError:
        return f"`{value}`"


def render() -> str:
    """The markdown text of ``docs/configuration.md``."""
    lines = [_HEADER]
    for section, sinfo in Settings.model_fields.items():
        model = sinfo.annotation
        assert isinstance(model, type) and issubclass(model, BaseModel)
        lines.append(f"## `{section}` — {(model.__doc__ or '').strip().splitlines()[0]}\n")
        lines.append("| option | environment variable | type | default | meaning |")
        lines.append("|---|---|---|---|---|")
        for name, info in model.model_fields.items():
            env = f"NEWSWATCH_{section.upper()}_{name.upper()}"
            desc = (info.description or "").replace("|", "\\|")
            ty = _type_name(info).replace("|", "\\|")
            lines.append(f"| `{name}` | `{env}` | {ty} | {_default(info)} | {desc} |")
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":  # pragma: no cover
    print(render(), end="")
