"""Incidents: one entity incident → one notification naming the lead key and the related keys.

The grouping rule is tested on its own (:class:`IncidentBook`), in every sink's payload,
and through the real notifier, broker and a loopback receiver, across a notifier restart.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from newswatch.alerts.events import AlertEvent
from newswatch.alerts.incidents import Incident, IncidentBook, subjects
from newswatch.alerts.notify import Notifier
from newswatch.alerts.sinks.alertmanager import alertmanager_alerts
from newswatch.alerts.sinks.base import Notification
from newswatch.alerts.sinks.pagerduty import pagerduty_event, pagerduty_incident_event
from newswatch.alerts.sinks.slack import slack_payload
from newswatch.alerts.sinks.teams import teams_payload
from newswatch.settings import KafkaSettings, Settings, TopicSettings
from tests.support.alerts import (
    FIN_POSTS,
    MIN,
    NVDA_POSTS,
    alert,
    incident_note,
    jpm_alert,
    nvda_incident,
    post,
    produce_alerts,
    pump,
    resolved,
)
from tests.support.receivers import Receiver
from tests.support.settings import notify_settings

# -- the rule -------------------------------------------------------------------------------------


def test_entity_incident_is_one_page_led_by_the_entity() -> None:
    book = IncidentBook(gap_ms=10 * MIN)
    plan = book.observe([*nvda_incident(), jpm_alert()])
    [page] = plan.pages
    assert page.status == "firing" and len(page.alerts) == 5
    summary = page.summary()
    assert (summary.lead_kind, summary.lead_key) == ("entity", "$NVDA")
    assert summary.lead_signals == ("negative_share", "volume")
    assert [(a["kind"], a["key"]) for a in summary.also_moved] == [
        ("source", "reddit"),
        ("topic", "Financials"),
        ("global", "all"),
    ]
    fin = next(a for a in summary.also_moved if a["key"] == "Financials")
    assert fin["explained"] == {"negative_share": 0.875}  # 35 of the topic's 40 excess bearish posts
    assert summary.summary.startswith("$NVDA explains 88 % of the rise in topic Financials' negative share")
    assert {e["id"] for e in summary.evidence} >= {"n1", "n2", "n3"}
    assert [a.key for a in plan.loose] == ["$JPM"], "no shared posts: ordinary grouping"


def test_a_key_linked_only_through_another_member_joins_whatever_the_batch_order() -> None:
    """The blog shares a post only with the global key, which links to $NVDA by subject."""
    nvda = alert("entity", "$NVDA", "volume", NVDA_POSTS, 50, 10, 50)
    glob = alert(
        "global", "all", "mean_sentiment", (post("g1", "$NVDA"), post("g2", "$NVDA")), -0.2, 0.1, 300, 1
    )
    blog = alert(
        "source",
        "blog",
        "negative_share",
        (post("g2", "$NVDA"), post("b1", "$META"), post("b2")),
        0.6,
        0.2,
        12,
        1,
    )
    for batch in ([nvda, glob, blog], [blog, glob, nvda]):
        plan = IncidentBook(gap_ms=10 * MIN).observe(batch)
        assert [sorted(a.key for a in p.alerts) for p in plan.pages] == [["$NVDA", "all", "blog"]]
        assert plan.pages[0].summary().lead_key == "$NVDA" and not plan.loose


def test_alerts_far_apart_in_event_time_are_separate_incidents() -> None:
    """Replays run faster than real time: only event time decides what is 'close together'."""
    book = IncidentBook(gap_ms=10 * MIN)
    first = book.observe([alert("entity", "$NVDA", "volume", NVDA_POSTS, 50, 10, 50)])
    a_day_later = alert("topic", "Financials", "volume", FIN_POSTS, 90, 30, 90, window=24 * 60)
    later = book.observe([a_day_later])
    assert [a.key for a in first.loose] == ["$NVDA"] and [a.key for a in later.loose] == ["Financials"]
    assert not later.absorbed and len(book.incidents) == 2


def test_subjects_need_most_of_the_examples() -> None:
    assert subjects(alert("topic", "Financials", "volume", FIN_POSTS, 1, 0, 1)) == {"$NVDA"}
    mixed = (post("a", "$NVDA"), post("b", "$JPM"), post("c"))
    assert subjects(alert("topic", "Financials", "volume", mixed, 1, 0, 1)) == set()
    assert subjects(alert("entity", "$JPM", "volume", NVDA_POSTS, 1, 0, 1)) == {"$JPM"}


def test_late_member_joins_without_a_page_and_the_incident_resolves_once() -> None:
    book = IncidentBook(gap_ms=10 * MIN)
    events = nvda_incident()
    assert len(book.observe(events).pages) == 1
    late = alert("source", "blog", "volume", (post("f2", "$NVDA"), post("b1")), 40, 12, 40, window=2)
    joined = book.observe([late])
    assert joined.absorbed == [late] and not joined.pages and not joined.loose
    plans = [book.observe([resolved(a, 5)]) for a in [*events, late][:-1]]
    assert all(not p.pages and not p.loose for p in plans), "members resolving while others fire: no page"
    last = book.observe([resolved(late, 6)])
    [page] = last.pages
    assert page.status == "resolved" and {a.key for a in page.alerts} == {
        "$NVDA",
        "Financials",
        "reddit",
        "all",
        "blog",
    }
    assert all(a.status == "resolved" for a in page.alerts) and page.incident.closed


def test_a_batch_read_again_after_a_restart_plans_the_same_pages() -> None:
    """The incident log written before delivery makes a re-read batch give the same pages and ids."""
    events = nvda_incident()
    book = IncidentBook(gap_ms=10 * MIN)
    plan = book.observe(events)
    log = [(inc.id.encode(), inc.to_record()) for inc in plan.changed]
    restarted = IncidentBook(gap_ms=10 * MIN)
    restarted.load(log)
    again = restarted.observe(list(reversed(events)))
    assert [p.incident.id for p in again.pages] == [p.incident.id for p in plan.pages]
    assert [Notification(p.alerts, "incident", incident=p.summary()).id for p in again.pages] == [
        Notification(p.alerts, "incident", incident=p.summary()).id for p in plan.pages
    ]
    assert Incident.from_record(log[0][1]).to_record() == log[0][1]


# -- every sink names the lead, the related keys and the evidence ---------------------------------


def test_generic_payload_carries_the_incident() -> None:
    body = incident_note().to_payload()
    assert body["incident"]["lead"] == {
        "kind": "entity",
        "key": "$NVDA",
        "signals": ["negative_share", "volume"],
    }
    assert "explains 88 %" in body["incident"]["summary"]
    assert [a["key"] for a in body["incident"]["also_moved"]] == ["reddit", "Financials", "all"]
    assert body["incident"]["evidence"][0]["id"] == "n1"
    assert len(body["alerts"]) == 5 and body["title"].startswith(
        "[FIRING] incident $NVDA: 5 alerts, 3 related keys"
    )


def test_chat_payloads_show_summary_related_keys_and_evidence() -> None:
    note = incident_note()
    slack = str(slack_payload(note))
    teams = str(teams_payload(note))
    for text in (slack, teams):
        assert "explains 88 %" in text and "topic Financials" in text and "global" in text
        assert "post n1" in text and "https://x.test/n1" in text


def test_pagerduty_pages_once_per_incident_and_resolves_the_same_dedup_key() -> None:
    firing = pagerduty_incident_event(incident_note(), "rk")
    resolution = pagerduty_incident_event(incident_note("resolved"), "rk")
    lead = nvda_incident()[0]
    assert firing["event_action"] == "trigger" and resolution["event_action"] == "resolve"
    assert firing["dedup_key"] == resolution["dedup_key"] == lead.fingerprint
    # An incident first paged as its opening alert alone is resolved by the incident's resolution.
    assert pagerduty_event(lead, "rk", "entity")["dedup_key"] == firing["dedup_key"]
    details = firing["payload"]["custom_details"]
    assert "explains 88 %" in firing["payload"]["summary"] and len(details["also_moved"]) == 3
    assert details["evidence"][0]["id"] == "n1"


def test_alertmanager_keeps_per_alert_labels_and_adds_the_incident() -> None:
    alerts = alertmanager_alerts(incident_note())
    assert len(alerts) == 5
    lead = nvda_incident()[0]
    standalone = alertmanager_alerts(Notification(alerts=(lead,), group="entity"))[0]
    mine = next(a for a in alerts if a["labels"]["fingerprint"] == lead.fingerprint)
    assert mine["labels"] == standalone["labels"], "same identity as a standalone alert"
    assert {a["annotations"]["incident_lead"] for a in alerts} == {"entity $NVDA"}
    assert "explains 88 %" in mine["annotations"]["incident_summary"]


# -- through the real notifier, broker and receiver ------------------------------------------------


def _consumed(notifier: Notifier) -> float:
    labels = {"stage": "notify"}
    return (
        notifier.metrics.registry.get_sample_value("newswatch_stream_messages_consumed_total", labels) or 0.0
    )


def _bodies(receiver: Receiver) -> list[dict[str, Any]]:
    """Accepted payloads, a retried webhook-id once."""
    seen: dict[str, dict[str, Any]] = {}
    for r in receiver.accepted:
        seen.setdefault(r.headers["webhook-id"], r.json())
    return list(seen.values())


async def test_one_entity_incident_is_one_notification_and_one_resolution_across_a_restart(
    kafka: KafkaSettings, topics: TopicSettings, receiver: Receiver, unique: str
) -> None:
    settings = notify_settings(receiver.url, unique, group_wait_s=0.5, incident_wait_s=1.0)
    events = nvda_incident()
    late = alert("source", "blog", "volume", (post("f2", "$NVDA"), post("b1")), 40, 12, 40, window=2)
    async with Notifier(Settings(kafka=kafka, topics=topics, notify=settings)) as notifier:
        await produce_alerts(kafka, topics.alerts, [*events, jpm_alert()])
        await pump(notifier, lambda: len(_bodies(receiver)) >= 2)
    firing = [b for b in _bodies(receiver) if b["incident"]]
    assert len(firing) == 1, "one notification for the incident"
    [page] = firing
    assert page["status"] == "firing" and page["incident"]["lead"]["key"] == "$NVDA"
    assert {a["key"] for a in page["alerts"]} == {"$NVDA", "Financials", "reddit", "all"}
    assert [b["alerts"][0]["key"] for b in _bodies(receiver) if not b["incident"]] == ["$JPM"]

    # A new notifier (state only from the incident log): the late member joins silently and the
    # incident resolves with one notification listing every member.
    async with Notifier(Settings(kafka=kafka, topics=topics, notify=settings)) as notifier:
        assert notifier.incidents is not None and len(notifier.incidents.incidents) == 2
        await produce_alerts(kafka, topics.alerts, [late, *(resolved(a, 5) for a in events)])
        await pump(notifier, lambda: _consumed(notifier) >= 6)
        await notifier.drain()
        assert len(_bodies(receiver)) == 2, "the late member was not paged"
        await produce_alerts(kafka, topics.alerts, [resolved(late, 6)])
        await pump(notifier, lambda: len(_bodies(receiver)) >= 3)
        for _ in range(3):  # nothing else arrives
            await notifier.step(timeout_ms=100)
        await notifier.drain()
        held = notifier.incidents.incidents if notifier.incidents else {}
        assert [i.members.keys() for i in held.values() if i.closed] == [], "closed incidents are forgotten"
    bodies = _bodies(receiver)
    statuses = Counter((b["status"], bool(b["incident"])) for b in bodies)
    assert statuses == Counter({("firing", True): 1, ("firing", False): 1, ("resolved", True): 1})
    [resolution] = [b for b in bodies if b["status"] == "resolved"]
    assert resolution["incident"]["id"] == page["incident"]["id"]
    assert {a["key"] for a in resolution["alerts"]} == {"$NVDA", "Financials", "reddit", "all", "blog"}
    assert "blog" in {a["key"] for a in resolution["incident"]["also_moved"]}


def test_the_global_key_joins_through_one_post_about_the_incident_entity() -> None:
    """The whole stream's worst posts mix topics: one of three about $NVDA links the global key."""
    nvda = alert("entity", "$NVDA", "negative_share", NVDA_POSTS, 0.9, 0.2, 40)
    glob = alert(
        "global",
        "all",
        "negative_share",
        (post("g1", "$NVDA"), post("g2", "$AAPL"), post("g3")),
        0.35,
        0.2,
        900,
        1,
    )
    plan = IncidentBook(gap_ms=10 * MIN).observe([nvda, glob])
    assert [(n.status, sorted(a.key for a in n.alerts)) for n in plan.pages] == [("firing", ["$NVDA", "all"])]
    # A topic needs more than one post in three: a single mention is a coincidence there.
    topic = alert(
        "topic", "Tech", "negative_share", (post("t1", "$NVDA"), post("t2"), post("t3")), 0.5, 0.2, 80, 1
    )
    later = IncidentBook(gap_ms=10 * MIN)
    later.observe([nvda])
    assert [a.key for a in later.observe([topic]).loose] == ["Tech"]


# -- the global key joins the incident that explains its excess -----------------------------------

#: The demo's incident: $NVDA's 66 posts a window, 86 % bearish against 10 %: ~50 excess bearish posts.
NVDA_BEARISH = alert("entity", "$NVDA", "negative_share", NVDA_POSTS, 0.86, 0.1, 66)
NVDA_SENTIMENT = alert("entity", "$NVDA", "mean_sentiment", NVDA_POSTS, -0.62, 0.3, 66)
#: The whole stream's three most negative posts are about other things (no shared evidence).
OTHER_POSTS = (post("g1", "$AAPL"), post("g2", "$AAPL"), post("g3"))


def _global(observed: float, support: int, signal: str = "negative_share", window: int = 1) -> AlertEvent:
    return alert("global", "all", signal, OTHER_POSTS, observed, 0.2, support, window)


def test_a_global_alert_mostly_explained_by_an_open_entity_incident_is_one_notification() -> None:
    """0.33 against 0.20 of 500 posts: 65 excess bearish posts, 50 of them $NVDA's (77 %)."""
    glob = _global(0.33, 500)
    for batch in ([NVDA_BEARISH, NVDA_SENTIMENT, glob], [glob, NVDA_SENTIMENT, NVDA_BEARISH]):
        plan = IncidentBook(gap_ms=10 * MIN).observe(batch)
        [page] = plan.pages
        assert not plan.loose, "no separate page for the global key"
        assert sorted(a.key for a in page.alerts) == ["$NVDA", "$NVDA", "all"]
        summary = page.summary()
        assert summary.lead_key == "$NVDA"
        [also] = summary.also_moved
        assert (also["kind"], also["key"]) == ("global", "all")
        assert also["explained"] == {"negative_share": 0.7717}  # 66 · 0.76 = 50.16 of 65
        assert (
            summary.summary
            == "$NVDA explains 77 % of the rise in global's negative share; also moved: global"
        )
        body = Notification(page.alerts, "incident", incident=summary).to_payload()
        assert [a["key"] for a in body["incident"]["also_moved"]] == ["all"]

    # Firing a window later (after the page went out), it joins silently and resolves with it.
    book = IncidentBook(gap_ms=10 * MIN)
    assert len(book.observe([NVDA_BEARISH, NVDA_SENTIMENT]).pages) == 1
    late = _global(0.33, 500, window=2)
    joined = book.observe([late])
    assert joined.absorbed == [late] and not joined.pages and not joined.loose
    assert not book.observe([resolved(NVDA_BEARISH, 4), resolved(NVDA_SENTIMENT, 4)]).pages
    [resolution] = book.observe([resolved(late, 5)]).pages
    assert resolution.status == "resolved" and sorted(a.key for a in resolution.alerts) == [
        "$NVDA",
        "$NVDA",
        "all",
    ]


def test_a_global_alert_the_entity_explains_little_of_stays_separate() -> None:
    # 0.35 against 0.20 of 2,000 posts: 300 excess bearish posts, $NVDA's 50 are 17 %.
    big = _global(0.35, 2_000)
    plan = IncidentBook(gap_ms=10 * MIN).observe([NVDA_BEARISH, NVDA_SENTIMENT, big])
    [page] = plan.pages
    assert {a.key for a in page.alerts} == {"$NVDA"} and plan.loose == [big]

    # A signal no firing entity member moved on explains nothing (the global key's volume).
    volume = alert("global", "all", "volume", OTHER_POSTS, 600, 500, 600, 1)
    assert IncidentBook(gap_ms=10 * MIN).observe([NVDA_BEARISH, volume]).loose == [NVDA_BEARISH, volume]

    # Once $NVDA has resolved, it no longer explains a global alert, however close in time.
    book = IncidentBook(gap_ms=10 * MIN)
    book.observe([NVDA_BEARISH, NVDA_SENTIMENT])
    book.observe([resolved(NVDA_BEARISH, 2)])
    after = _global(0.33, 500, window=3)
    assert book.observe([after]).loose == [after]

    # Far in event time: no join either.
    book = IncidentBook(gap_ms=10 * MIN)
    book.observe([NVDA_BEARISH, NVDA_SENTIMENT])
    next_day = _global(0.33, 500, window=24 * 60)
    assert book.observe([next_day]).loose == [next_day]


def test_an_explained_global_member_brings_no_evidence_and_topics_still_need_posts() -> None:
    """Its example posts are about other things: they must not pull $AAPL into the incident.
    A topic's excess is not explained by an entity's alone: its posts need not be in the topic."""
    book = IncidentBook(gap_ms=10 * MIN)
    [page] = book.observe([NVDA_BEARISH, NVDA_SENTIMENT, _global(0.33, 500)]).pages
    assert "$AAPL" not in page.incident.subjects and not {"g1", "g2", "g3"} & set(page.incident.posts)
    aapl = alert("entity", "$AAPL", "volume", (post("g1", "$AAPL"), post("a2", "$AAPL")), 30, 8, 30, 1)
    topic = alert("topic", "Tech", "negative_share", (post("t1"), post("t2")), 0.5, 0.2, 80, 1)
    later = book.observe([aapl, topic])
    assert later.loose == [aapl, topic] and not later.absorbed


def test_an_explained_global_member_survives_a_restart() -> None:
    events = [NVDA_BEARISH, NVDA_SENTIMENT, _global(0.33, 500)]
    book = IncidentBook(gap_ms=10 * MIN)
    plan = book.observe(events)
    restarted = IncidentBook(gap_ms=10 * MIN)
    restarted.load([(inc.id.encode(), inc.to_record()) for inc in plan.changed])
    again = restarted.observe(list(reversed(events)))
    assert [p.incident.id for p in again.pages] == [p.incident.id for p in plan.pages]
    assert [len(p.alerts) for p in again.pages] == [3] and not again.loose
    assert restarted._by_post.keys() == book._by_post.keys()
    assert restarted._by_subject.keys() == book._by_subject.keys() == {"$NVDA"}
