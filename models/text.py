"""Text clean-up shared by training and serving (no torch, no transformers)."""

from __future__ import annotations

import html
import re

__all__ = ["MAX_CHARS_PER_TOKEN", "URL", "clean_text", "is_blank"]

#: Characters kept per token of ``max_length`` before tokenizing; the tokenizer truncates
#: the rest anyway, this only bounds the work spent on megabyte-long inputs.
MAX_CHARS_PER_TOKEN = 32

#: A link (``http://`` or ``https://`` up to the next space); links carry no label signal.
URL = re.compile(r"https?://\S+")
_SPACE = re.compile(r"\s+")


def is_blank(text: str) -> bool:
    """True for empty or whitespace-only text (such items get an error result)."""
    return not text or text.isspace()


def clean_text(text: str, max_length: int = 512) -> str:
    """Normalise one text the same way in training and serving.

    Replaces invalid surrogates, unescapes HTML entities (``&amp;``), drops URLs,
    collapses whitespace and caps the length at ``max_length * MAX_CHARS_PER_TOKEN``
    characters (the tokenizer then truncates at ``max_length`` tokens).

    Examples
    --------
    >>> clean_text("Fed hikes &amp; holds  https://t.co/x1")
    'Fed hikes & holds'
    """
    text = text[: max_length * MAX_CHARS_PER_TOKEN * 2]
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates cannot reach the Rust tokenizer
        text = text.encode("utf-8", "replace").decode("utf-8", "replace")
    text = html.unescape(text)
    text = URL.sub(" ", text)
    text = _SPACE.sub(" ", text).strip()
    return text[: max_length * MAX_CHARS_PER_TOKEN]
