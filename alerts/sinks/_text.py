"""Plain-text pieces shared by the sinks, and the neutralising of hostile post content.

Keys (entities, topics, sources) and example texts come from the posts, that is from
whoever writes to the input topic. Before they reach an on-call channel they go through
:func:`neutral`:

* whitespace and control characters collapse to one space (no forged extra lines);
* markdown links ``[label](url)`` and HTML links ``<a href="url">label</a>`` become
  ``label (url)``, and what is left of ``](``/``][`` is split, so no link hides its target;
* URLs in the text are defanged (``https://evil.example`` → ``hxxps://evil[.]example``),
  so nothing in a post is clickable;
* ``<`` and ``>`` become ``‹`` and ``›``: Slack's ``<!channel>``, ``<!here>``, ``<@U…>``,
  ``<#C…>`` and ``<url|label>`` and HTML tags lose their meaning everywhere;
* ``@word`` gets a zero-width space after the ``@`` (``@here``, ``@channel``, ``@everyone``
  no longer notify anyone);
* a run of more than :data:`KEY_CHARS` characters without a space (a 3,000-character key
  inside a summary) is cut to :data:`KEY_CHARS`;

and every field is cut (:func:`cut`) to the channel's documented limit. The limits are
listed in ``docs/alerts.md`` (Hostile content).
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import quote

from newswatch.alerts.events import AlertEvent
from newswatch.alerts.sinks.base import IncidentSummary

__all__ = [
    "KEY_CHARS",
    "MAX_LISTED",
    "POST_CHARS",
    "alert_line",
    "also_moved_lines",
    "cut",
    "display_key",
    "example_lines",
    "neutral",
    "post_lines",
    "post_url",
    "safe_also_moved",
    "safe_posts",
    "safe_url",
]

MAX_LISTED = 10
#: A key shown in a title or line is cut to this many characters (the fingerprint stays exact).
KEY_CHARS = 120
#: An example post's text is cut to this many characters.
POST_CHARS = 200
#: The ellipsis that marks a cut field.
ELLIPSIS = "…"

_ZWSP = "\u200b"
_SPACE = re.compile(r"[\s\x00-\x1f\x7f-\x9f\u2028\u2029]+")
#: Bidirectional overrides and isolates (text that displays in another order than it reads).
_BIDI = re.compile(r"[\u202a-\u202e\u2066-\u2069]")
_MD_LINK = re.compile(r"!?\[([^\]]*)\]\(\s*<?([^()\s<>]*)>?(?:\s+(?:\"[^\"]*\"|'[^']*'))?\s*\)")
_HTML_LINK = re.compile(r"<a\b[^>]*?\bhref\s*=\s*[\"']?([^\"'\s>]*)[\"']?[^>]*>(.*?)</a\s*>", re.I)
_URL = re.compile(r"\b([a-z][a-z0-9+.-]{1,15})://([^\s/?#‹›()\[\]]+)", re.I)
_MENTION = re.compile(r"@(?=\w)")
_LONG_WORD = re.compile(rf"\S{{{KEY_CHARS + 1},}}")


def cut(text: str, limit: int) -> str:
    """``text`` at most ``limit`` characters long, ``…`` marking a cut.

    >>> cut("abcdef", 4), cut("abc", 4)
    ('abc…', 'abc')
    """
    if len(text) <= limit:
        return text
    return text[: max(0, limit - 1)] + ELLIPSIS


def _defang(match: re.Match[str]) -> str:
    scheme = match.group(1)
    if scheme.lower() in ("http", "https"):
        scheme = "hxxp" + scheme[4:]
    return f"{scheme}://{match.group(2).replace('.', '[.]')}"


def neutral(text: object, limit: int | None = None) -> str:
    """Post content made inert for a chat or paging channel (see the module docstring).

    >>> neutral("<!channel> [Reset your password](https://evil.example/reset) @here")
    '‹!channel› Reset your password (hxxps://evil[.]example/reset) @\\u200bhere'
    """
    s = _SPACE.sub(" ", _BIDI.sub("", str(text))).strip()
    s = _HTML_LINK.sub(lambda m: f"{m.group(2)} ({m.group(1)})", s)
    s = _MD_LINK.sub(lambda m: f"{m.group(1)} ({m.group(2)})" if m.group(2) else m.group(1), s)
    s = s.replace("](", "] (").replace("][", "] [")
    s = s.replace("<", "‹").replace(">", "›")
    s = _URL.sub(_defang, s)
    s = _MENTION.sub("@" + _ZWSP, s)
    s = _LONG_WORD.sub(lambda m: cut(m.group(), KEY_CHARS), s)
    return s if limit is None else cut(s, limit)


def display_key(key: str) -> str:
    """A key as titles and lines show it: neutralised and cut to :data:`KEY_CHARS`."""
    return neutral(key, KEY_CHARS)


def alert_line(a: AlertEvent) -> str:
    """``volume entity $NVDA: 120 vs 14 (score 0.91)`` (the key neutralised and cut)."""
    base = "?" if a.baseline is None else f"{a.baseline:.3g}"
    key = display_key(a.key)
    return f"{a.signal} {a.kind} {key}: {a.observed:.3g} vs {base} (score {a.score:.2f}, {a.support} posts)"


def example_lines(a: AlertEvent) -> list[str]:
    """Up to three example posts as ``score text (url)``."""
    return post_lines(a.examples[:3])


def safe_url(url: object, limit: int) -> str:
    """A link newswatch made (the dashboard): http(s) only, characters that could end or break
    it (``<``, ``>``, ``|``, quotes, spaces) percent-encoded, empty when longer than ``limit``."""
    if not isinstance(url, str) or not re.match(r"https?://", url, re.I):
        return ""
    quoted = quote(url, safe="/:?#[]@!$&'()*+,;=%~-._")
    return quoted if len(quoted) <= limit else ""


def post_url(url: object) -> str | None:
    """A post's own link when it is a plain ``http(s)://`` URL (shown, not hidden behind a label)."""
    if not isinstance(url, str) or not re.match(r"https?://[^\s<>|]+$", url, re.I) or len(url) > 500:
        return None
    return url


def post_lines(posts: tuple[dict[str, Any], ...] | list[dict[str, Any]]) -> list[str]:
    """Posts as ``score text (url)``, the text neutralised and cut to :data:`POST_CHARS`."""
    out = []
    for ex in posts:
        text = neutral(ex.get("text", ""), POST_CHARS)
        url = post_url(ex.get("url"))
        score = ex.get("score")
        head = f"{float(score):+.2f} " if isinstance(score, int | float) else ""
        out.append(f"{head}{text}" + (f" ({url})" if url else ""))
    return out


def safe_posts(
    posts: tuple[dict[str, Any], ...] | list[dict[str, Any]], text_chars: int
) -> list[dict[str, Any]]:
    """Posts as data for a channel that displays them (PagerDuty details, Alertmanager annotations):
    ``id``, ``text`` neutralised and cut, ``url`` only when a plain http(s) URL, ``score``."""
    out = []
    for ex in posts:
        score = ex.get("score")
        out.append(
            {
                "id": neutral(ex.get("id", ""), 200),
                "text": neutral(ex.get("text", ""), text_chars),
                "url": post_url(ex.get("url")),
                "score": score if isinstance(score, int | float) else None,
            }
        )
    return out


def safe_also_moved(inc: IncidentSummary) -> list[dict[str, Any]]:
    """The incident's related keys as data, keys and signal names neutralised and cut."""
    return [
        {
            "kind": neutral(a.get("kind", ""), 40),
            "key": display_key(str(a.get("key", ""))),
            "signals": [neutral(x, 40) for x in a.get("signals", ())],
            "explained": {neutral(k, 40): v for k, v in (a.get("explained") or {}).items()},
        }
        for a in inc.also_moved[:MAX_LISTED]
    ]


def also_moved_lines(inc: IncidentSummary) -> list[str]:
    """``topic Financials (negative_share, volume): 92 % of negative_share explained`` per related key."""
    out = []
    for a in inc.also_moved[:MAX_LISTED]:
        key = display_key(str(a["key"]))
        label = {"entity": key, "global": "global"}.get(a["kind"], f"{a['kind']} {key}")
        line = f"{label} ({', '.join(neutral(s, 40) for s in a['signals'])})"
        explained = a.get("explained") or {}
        if explained:
            line += ": " + ", ".join(
                f"{round(100 * v)} % of {neutral(s, 40)} explained" for s, v in explained.items()
            )
        out.append(line)
    if len(inc.also_moved) > MAX_LISTED:
        out.append(f"…and {len(inc.also_moved) - MAX_LISTED} more")
    return out
