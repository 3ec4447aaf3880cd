"""Reading user texts for ``newswatch predict`` (CSV with a ``text`` column, or JSON lines)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from newswatch.errors import ConfigError

__all__ = ["read_texts"]


def read_texts(path: Path) -> list[str]:
    """Texts of ``path``: the ``text`` column of a CSV or the ``text`` field of each JSON line."""
    if not path.is_file():
        raise ConfigError(f"input file {path} does not exist")
    suffix = path.suffix.lower()
    if suffix == ".csv":
        with path.open(newline="", encoding="utf-8", errors="replace") as fh:
            reader = csv.DictReader(fh)
            if reader.fieldnames is None or "text" not in reader.fieldnames:
                raise ConfigError(f"{path} has no 'text' column (columns: {reader.fieldnames})")
            return [row["text"] or "" for row in reader]
    if suffix in (".jsonl", ".ndjson", ".json"):
        texts: list[str] = []
        with path.open(encoding="utf-8", errors="replace") as fh:
            for n, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise ConfigError(f"{path}:{n}: not JSON ({exc.msg})") from None
                if isinstance(obj, str):
                    texts.append(obj)
                elif isinstance(obj, dict) and isinstance(obj.get("text"), str):
                    texts.append(obj["text"])
                else:
                    raise ConfigError(f"{path}:{n}: expected an object with a string 'text' field")
        return texts
    raise ConfigError(f"{path}: unsupported input type {suffix!r}; use .csv or .jsonl")
