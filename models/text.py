"""The one text clean-up, shared by training and serving (no torch, no transformers).

Every path from a raw text to model tokens goes through :func:`clean_text` exactly once:
training and pre-training (:mod:`newswatch.models.train`, :mod:`newswatch.models.pretrain`,
:mod:`newswatch.models.torch_infer`) and serving (:class:`~newswatch.models.engine.ClassifierEngine`,
which the classify stage hands the post's original text). The stream decoder
(:mod:`newswatch.stream.decode`) applies the same function to decide ``empty_text`` and to
find entities, so a post it accepts is one the model sees as non-empty.
"""

from __future__ import annotations

import html
import re
from collections.abc import Sequence
from typing import Any

__all__ = ["INVISIBLE", "MAX_CHARS_PER_TOKEN", "URL", "clean_text", "hf_encode", "is_blank"]

#: Characters kept per token of ``max_length`` before tokenizing; the tokenizer truncates
#: the rest anyway, this only bounds the work spent on megabyte-long inputs.
MAX_CHARS_PER_TOKEN = 32

#: A link (``http://`` or ``https://`` up to the next space); links carry no label signal.
URL = re.compile(r"https?://\S+")
#: Control characters (Cc), surrogates (Cs), private use (Co), bidi embeddings, overrides,
#: isolates and marks, zero-width characters and the BOM: invisible, or spoofing text.
INVISIBLE = re.compile(
    "[\x00-\x1f\x7f-\x9f\u061c\u200b-\u200f\u202a-\u202e\u2060\u2066-\u2069\ufeff"
    "\ud800-\udfff\ue000-\uf8ff\U000f0000-\U0010ffff]"
)
_SPACE = re.compile(r"\s+")


def is_blank(text: str) -> bool:
    """True for empty or whitespace-only text (such items get an error result)."""
    return not text or text.isspace()


def clean_text(text: str, max_length: int = 512, *, max_chars: int | None = None) -> str:
    """Normalise one text, the same way in training and serving.

    Unescapes HTML entities (``&amp;``), replaces control, zero-width and bidirectional
    override/isolate characters and lone surrogates by spaces, drops URLs, collapses
    whitespace and caps the length at ``max_chars`` characters, by default
    ``max_length * MAX_CHARS_PER_TOKEN`` (the tokenizer then truncates at ``max_length``
    tokens). Apply it once: it is not meant to be applied to its own output.

    Examples
    --------
    >>> clean_text("Fed hikes &amp; holds  https://t.co/x1")
    'Fed hikes & holds'
    >>> clean_text("Buy\\u202e $AAPL\\x00 now\\n\\n!")
    'Buy $AAPL now !'
    >>> clean_text("$A $B $C and a long tail", max_chars=10)
    '$A $B $C a'
    """
    limit = max_chars if max_chars is not None else max_length * MAX_CHARS_PER_TOKEN
    text = html.unescape(text[: limit * 2])
    # The same steps as the three substitutions INVISIBLE, URL, then _SPACE + strip, skipping
    # what cannot match (the decoder runs this on every post): printable ASCII holds no
    # INVISIBLE character, a URL needs "http", and str.split() splits on exactly the
    # characters that \s matches (both are Py_UNICODE_ISSPACE; tests/models/test_text.py
    # checks every code point).
    if not (text.isascii() and text.isprintable()):
        text = INVISIBLE.sub(" ", text)
    if "http" in text:
        text = URL.sub(" ", text)
    return " ".join(text.split())[:limit].rstrip()


def hf_encode(tokenizer: Any, texts: Sequence[str], max_length: int, **options: Any) -> Any:
    """A Hugging Face tokenizer's encoding of ``texts`` after :func:`clean_text`, truncated at
    ``max_length`` tokens: how training, pre-training and PyTorch inference tokenize.

    ``options`` go to the tokenizer (e.g. ``return_special_tokens_mask=True``); the result's
    ``input_ids`` are what :meth:`ClassifierEngine.encode
    <newswatch.models.engine.ClassifierEngine.encode>` gives at serving time.
    """
    cleaned = [clean_text(t, max_length) for t in texts]
    return tokenizer(cleaned, truncation=True, max_length=max_length, **options)
