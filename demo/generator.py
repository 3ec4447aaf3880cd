"""A synthetic but realistic finance post stream for the demo and benchmarks.

Posts cover many tickers, sectors and topics with a daily-ish rate pattern,
Poisson arrivals and a sentiment mix close to real finance chatter (mostly
neutral). An optional scripted :class:`Incident` injects a burst of negative
posts about one ticker, which the demo's detectors are expected to catch.
The same seed gives the same stream.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from newswatch.io.schemas import Post
from newswatch.settings.stream import DemoSettings

__all__ = ["COMPANIES", "Incident", "StreamGenerator"]

#: (ticker, company, sector) — a spread of large caps across sectors.
COMPANIES: tuple[tuple[str, str, str], ...] = (
    ("AAPL", "Apple", "Technology"),
    ("MSFT", "Microsoft", "Technology"),
    ("NVDA", "Nvidia", "Technology"),
    ("GOOG", "Alphabet", "Technology"),
    ("AMZN", "Amazon", "Consumer"),
    ("META", "Meta", "Technology"),
    ("TSLA", "Tesla", "Consumer"),
    ("AMD", "AMD", "Technology"),
    ("INTC", "Intel", "Technology"),
    ("ORCL", "Oracle", "Technology"),
    ("JPM", "JPMorgan", "Financials"),
    ("BAC", "Bank of America", "Financials"),
    ("GS", "Goldman Sachs", "Financials"),
    ("MS", "Morgan Stanley", "Financials"),
    ("WFC", "Wells Fargo", "Financials"),
    ("XOM", "Exxon Mobil", "Energy"),
    ("CVX", "Chevron", "Energy"),
    ("COP", "ConocoPhillips", "Energy"),
    ("PFE", "Pfizer", "Healthcare"),
    ("JNJ", "Johnson & Johnson", "Healthcare"),
    ("MRK", "Merck", "Healthcare"),
    ("UNH", "UnitedHealth", "Healthcare"),
    ("WMT", "Walmart", "Consumer"),
    ("KO", "Coca-Cola", "Consumer"),
    ("PEP", "PepsiCo", "Consumer"),
    ("DIS", "Disney", "Communication"),
    ("NFLX", "Netflix", "Communication"),
    ("BA", "Boeing", "Industrials"),
    ("CAT", "Caterpillar", "Industrials"),
    ("GE", "GE Aerospace", "Industrials"),
)

_BULLISH = (
    "{name} (${t}) beats estimates, raises full-year guidance",
    "${t} jumps {pct}% after {name} unveils record quarterly revenue",
    "Analysts upgrade ${t} to buy, lift price target to ${price}",
    "{name} announces ${bn}B buyback and dividend hike",
    "${t} hits all-time high as demand for {name} products surges",
    "{name} wins major contract; ${t} rallies in early trading",
)
_BEARISH = (
    "${t} slides {pct}% after {name} misses revenue estimates",
    "{name} cuts outlook, shares of ${t} tumble",
    "Analysts downgrade ${t} to sell on weakening margins",
    "{name} faces regulatory probe; ${t} falls premarket",
    "${t} drops as {name} warns of supply chain disruption",
    "{name} announces layoffs amid slowing demand, ${t} down {pct}%",
)
_NEUTRAL = (
    "{name} (${t}) to report earnings on {day}",
    "${t} trading flat ahead of {name} investor day",
    "{name} names new chief financial officer",
    "What to watch in ${t} this week",
    "{name} schedules conference call for {day}",
    "${t} options volume in line with 30-day average",
)
_MACRO = (
    ("Fed holds rates steady, signals patience on cuts", 0),
    ("Treasury yields climb as inflation data surprises to the upside", -1),
    ("Oil prices jump after OPEC+ extends output cuts", 0),
    ("Dollar weakens against the euro after jobs report", 0),
    ("Gold hits record as investors seek safety", -1),
    ("Stocks rally as CPI cools more than expected", 1),
    ("Markets slide on recession fears", -1),
    ("IPO market heats up with three listings this week", 1),
)
_INCIDENT = (
    "${t} plunges {pct}% after report {name} faces export ban",
    "{name} hit with fraud allegations, ${t} crashes",
    "Short seller targets {name}; ${t} in free fall",
    "${t} halted after {name} discloses accounting irregularities",
    "{name} recalls flagship product, ${t} sinks {pct}%",
    "Panic selling in ${t} as {name} guidance collapses",
)
_SOURCES = ("newswire", "twitter", "stocktwits", "reddit", "blog")
_DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday")
#: The demo section's defaults are the generator's: one declaration (``newswatch/settings/stream.py``).
_DEMO = DemoSettings()


@dataclass(frozen=True, slots=True)
class Incident:
    """A scripted burst of negative posts about one ticker."""

    ticker: str  # with or without "$"
    start_s: float  # seconds after the stream start
    duration_s: float = _DEMO.incident_duration_s
    rate_per_s: float = _DEMO.incident_rate_per_s  # extra posts per second during the incident


class StreamGenerator:
    """Deterministic generator of :class:`Post` records with event times.

    >>> gen = StreamGenerator(seed=1, rate_per_s=10)
    >>> posts = list(gen.take(3))
    >>> [p.id for p in posts]
    ['gen-1-0', 'gen-1-1', 'gen-1-2']
    """

    def __init__(
        self,
        seed: int = _DEMO.seed,
        rate_per_s: float = _DEMO.rate_per_s,
        start: datetime | None = None,
        incident: Incident | None = None,
        daily_amplitude: float = 0.3,
    ) -> None:
        if rate_per_s <= 0:
            raise ValueError("rate_per_s must be positive")
        self.seed = seed
        self.rate_per_s = rate_per_s
        self.start = start or datetime.now(UTC)
        self.incident = incident
        self.daily_amplitude = daily_amplitude
        self._rng = random.Random(seed)
        self._n = 0
        # Zipf-like popularity: a few tickers get most of the chatter.
        self._weights = [1.0 / (i + 1) ** 0.9 for i in range(len(COMPANIES))]

    @classmethod
    def from_settings(
        cls, demo: DemoSettings, start: datetime | None = None, *, incident: bool = True
    ) -> StreamGenerator:
        """The demo's stream: rate, seed and (unless ``incident`` is false) the scripted incident
        of the ``demo`` settings section."""
        scripted = Incident(
            demo.incident_ticker,
            start_s=demo.incident_after_s,
            duration_s=demo.incident_duration_s,
            rate_per_s=demo.incident_rate_per_s,
        )
        return cls(
            seed=demo.seed, rate_per_s=demo.rate_per_s, start=start, incident=scripted if incident else None
        )

    def rate_at(self, t: float) -> float:
        """Base posts/s ``t`` seconds after the start (incidents come on top): ``rate_per_s`` times a
        daily cycle of ``± daily_amplitude`` that follows the UTC time of day, lowest at 18:00.

        >>> from datetime import datetime, timezone
        >>> gen = StreamGenerator(rate_per_s=10, start=datetime(2026, 1, 1, 5, 30, tzinfo=timezone.utc))
        >>> round(gen.rate_at(0), 6) == round(gen.rate_at(86_400), 6), round(gen.rate_at(30 * 60), 3)
        (True, 13.0)
        """
        start = self.start.astimezone(UTC) if self.start.tzinfo is not None else self.start
        of_day = start.hour * 3600 + start.minute * 60 + start.second + start.microsecond / 1e6
        day_phase = 2 * math.pi * ((of_day + t) % 86_400) / 86_400
        return self.rate_per_s * (1 + self.daily_amplitude * math.sin(day_phase))

    def _fill(self, template: str, ticker: str, name: str) -> str:
        r = self._rng
        return template.format(
            t=ticker,
            name=name,
            pct=r.choice((2, 3, 4, 5, 7, 9, 12)),
            price=r.randrange(50, 900, 5),
            bn=r.choice((1, 2, 5, 10, 25)),
            day=r.choice(_DAYS),
        )

    def _post(self, t: float, text: str, source: str, entities: tuple[str, ...]) -> Post:
        post = Post(
            id=f"gen-{self.seed}-{self._n}",
            text=text,
            source=source,
            published_at=self.start + timedelta(seconds=t),
            url=f"https://news.example.com/{self.seed}/{self._n}",
            author=f"user{self._rng.randrange(5000)}",
            lang="en",
            entities=entities,
        )
        self._n += 1
        return post

    def _regular(self, t: float) -> Post:
        r = self._rng
        source = r.choices(_SOURCES, weights=(3, 5, 3, 2, 1))[0]
        if r.random() < 0.15:
            text, _ = r.choice(_MACRO)
            return self._post(t, text, source, ())
        ticker, name, _sector = r.choices(COMPANIES, weights=self._weights)[0]
        mood = r.choices((_NEUTRAL, _BULLISH, _BEARISH), weights=(0.6, 0.22, 0.18))[0]
        return self._post(t, self._fill(r.choice(mood), ticker, name), source, (f"${ticker}",))

    def _incident_post(self, t: float) -> Post:
        assert self.incident is not None
        ticker = self.incident.ticker.lstrip("$")
        name = next((n for tk, n, _ in COMPANIES if tk == ticker), ticker)
        source = self._rng.choice(_SOURCES)
        return self._post(t, self._fill(self._rng.choice(_INCIDENT), ticker, name), source, (f"${ticker}",))

    def _in_incident(self, t: float) -> bool:
        inc = self.incident
        return inc is not None and inc.start_s <= t < inc.start_s + inc.duration_s

    def posts(self) -> Iterator[tuple[float, Post]]:
        """Endless ``(offset_s, post)`` pairs in event-time order."""
        t = 0.0
        r = self._rng
        while True:
            rate = self.rate_at(t)
            extra = self.incident.rate_per_s if self.incident is not None and self._in_incident(t) else 0.0
            total = rate + extra
            t += r.expovariate(total)
            if extra and r.random() < extra / total:
                yield t, self._incident_post(t)
            else:
                yield t, self._regular(t)

    def take(self, n: int) -> Iterator[Post]:
        """The first ``n`` posts."""
        for i, (_, post) in enumerate(self.posts()):
            if i >= n:
                return
            yield post
