"""One-line messages for environment variables pydantic-settings cannot parse.

pydantic-settings reads list, tuple, dict and model options from the environment as JSON
and, when that fails, raises ``SettingsError('error parsing value for field "notify" from
source "EnvSettingsSource"')`` with the JSON error chained: no variable named, a
traceback in the CLI. :func:`env_error_message` names the variable and the form it takes,
never its value (``NEWSWATCH_NOTIFY_WEBHOOK_URLS`` holds secret URLs).
"""

from __future__ import annotations

import json
import os
from typing import Any

from pydantic import BaseModel

__all__ = ["env_error_message"]

#: Examples of the JSON some options take, for the message.
_EXAMPLES = {
    "NEWSWATCH_NOTIFY_WEBHOOK_URLS": "'[\"https://hooks.example.com/newswatch\"]'",
    "NEWSWATCH_NOTIFY_SINKS": '\'[{"name":"chat","type":"slack","url_file":"/run/secrets/slack"}]\'',
}


def _is_json_option(annotation: Any) -> bool:
    text = str(annotation)
    return any(t in text for t in ("tuple", "list", "dict", "set", "Settings")) or (
        isinstance(annotation, type) and issubclass(annotation, BaseModel)
    )


def env_error_message(settings_cls: type[BaseModel], prefix: str, exc: Exception) -> str:
    """``NEWSWATCH_NOTIFY_SINKS is not valid JSON (line 1, column 14: …); set a JSON list, e.g. …``.

    Looks for a ``<prefix><SECTION>_<OPTION>`` variable of a JSON-valued option whose value
    does not parse; falls back to the exception's own text.
    """
    environ = {k.upper(): v for k, v in os.environ.items()}
    for section, field in settings_cls.model_fields.items():
        model = field.annotation
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            continue
        for option, sub in model.model_fields.items():
            name = f"{prefix}{section}_{option}".upper()
            value = environ.get(name)
            if value is None or not _is_json_option(sub.annotation):
                continue
            try:
                json.loads(value)
            except json.JSONDecodeError as err:
                example = _EXAMPLES.get(name)
                hint = f"; set JSON, e.g. {name}={example}" if example else "; lists and mappings are JSON"
                return f"{name} is not valid JSON (line {err.lineno}, column {err.colno}: {err.msg}){hint}"
    return f"invalid settings: {exc}"
