"""Degradation modes (docs/RULES.md, section 12): a feed silent past its rule, as a clock tick finds it, puts its
fallback on the location (a buffer in units or percent, or out of NETWORK channels) at that tick's position, the
records say why, and the next tick after the feed speaks again lifts it; all of it deterministic, through the codec
too."""

from __future__ import annotations

import dataclasses

from app.engine import (
    ChannelGranularity,
    EncodingStore,
    ExceptionKind,
    FallbackKind,
    FeedActivity,
    FeedRule,
    FeedSeen,
    FeedType,
    LocationType,
    ReservationOutcome,
)
from tests.engine.factories import Ledger, availability, channel, decisions, exceptions, policy, receipt, reserve, tick

MINUTE = 60_000
T0 = 1_732_838_400_000


def feed_policy(fallback: FallbackKind, amount: int = 0, silence_seconds: int = 900, version: int = 1, **rule):
    return dataclasses.replace(
        policy(version=version, stores=("S1", "S2"), dcs=("DC1",), channels=(
            channel("ecommerce"),
            channel("store-pickup", priority=1, granularity=ChannelGranularity.LOCATION,
                    location_types=(LocationType.STORE,)),
        ), event_time=T0),
        feeds=(FeedRule(FeedType.POS, silence_seconds, fallback, amount, **rule),),
    )


def activity(location: str, at: int, feed: FeedType = FeedType.POS) -> FeedActivity:
    return FeedActivity(feed, at, (FeedSeen(location, at),))


def stocked(fallback: FallbackKind, amount: int = 0, store=None, **rule) -> Ledger:
    ledger = Ledger(store=store)
    ledger.feed(feed_policy(fallback, amount, **rule), receipt(10, "S1", time=T0), receipt(5, "S2", time=T0),
                receipt(20, "DC1", time=T0))
    ledger.feed(activity("S1", T0), activity("S2", T0))
    return ledger


def test_a_silent_pos_feed_holds_back_units_until_it_speaks_again():
    """Worked example of RULES section 12: S1 holds 10, S2 5, DC1 20; ecommerce (NETWORK) shows 35. The POS rule
    allows 15 minutes of silence and then holds back 2 units at the location. S2's POS speaks at 10 minutes, S1's
    does not: the tick at 16 minutes finds S1 silent (16 > 15) and ecommerce shows 33, S1's pickup key 8, both records
    naming S1:POS. S1's POS speaks at 20 minutes; the next tick lifts the fallback."""
    ledger = stocked(FallbackKind.BUFFER_UNITS, 2)
    assert ledger.shown("ecommerce") == 35
    ledger.feed(activity("S2", T0 + 10 * MINUTE), tick(T0 + 15 * MINUTE))
    assert ledger.shown("ecommerce") == 35  # exactly 15 minutes: not yet silent past the rule
    out = ledger.feed(tick(T0 + 16 * MINUTE))
    [stale] = exceptions(out)
    assert (stale.kind, stale.location, stale.sku, stale.quantity) == (ExceptionKind.STALE_FEED, "S1", None,
                                                                        16 * MINUTE)
    records = {(a.channel, a.location): a for a in availability(out)}
    assert records[("ecommerce", None)].quantity == 33 and records[("ecommerce", None)].fallbacks == ("S1:POS",)
    assert records[("store-pickup", "S1")].quantity == 8 and records[("store-pickup", "S1")].fallbacks == ("S1:POS",)
    assert ("store-pickup", "S2") not in records  # S2's feed is alive: nothing changes there
    assert all(a.event_id == stale.event_id == "tick-0-8" for a in availability(out))

    ledger.feed(activity("S1", T0 + 20 * MINUTE))  # the feed speaks: lifted at the next tick, not before
    assert ledger.shown("ecommerce") == 33
    out = ledger.feed(tick(T0 + 21 * MINUTE))
    assert [(e.kind, e.location, e.quantity) for e in exceptions(out)] == [
        (ExceptionKind.FEED_RECOVERED, "S1", 20 * MINUTE)]
    assert ledger.shown("ecommerce") == 35
    assert [a.fallbacks for a in availability(out)] == [(), ()]


def test_a_percent_buffer_rounds_up_and_follows_the_stock():
    ledger = stocked(FallbackKind.BUFFER_PERCENT, 25)
    ledger.feed(activity("S2", T0 + 10 * MINUTE), tick(T0 + 16 * MINUTE))
    assert ledger.shown("store-pickup", location="S1") == 7  # 10 - ceil(2.5)
    ledger.feed(receipt(2, "S1", time=T0 + 17 * MINUTE))
    assert ledger.shown("store-pickup", location="S1") == 9  # 12 - 3


def test_exclusion_takes_the_location_out_of_network_channels_and_their_sourcing_only():
    ledger = stocked(FallbackKind.EXCLUDE_FROM_NETWORK)
    ledger.feed(activity("S2", T0 + 10 * MINUTE), tick(T0 + 16 * MINUTE))
    assert ledger.shown("ecommerce") == 25  # S2 5 + DC1 20
    assert ledger.shown("store-pickup", location="S1") == 10  # the location's own key still shows it
    out = ledger.feed(reserve("R-1", 25, time=T0 + 17 * MINUTE))
    [decision] = decisions(out)
    assert decision.outcome is ReservationOutcome.ACCEPTED
    assert {line.location for line in decision.lines} == {"DC1", "S2"}  # nothing sourced from the silent store
    refused = decisions(ledger.feed(reserve("R-2", 1, time=T0 + 17 * MINUTE)))
    assert refused[0].reason == "INSUFFICIENT_STOCK"


def test_only_locations_of_the_rule_s_types_and_only_feeds_once_seen_are_watched():
    ledger = stocked(FallbackKind.BUFFER_UNITS, 2, location_types=(LocationType.DISTRIBUTION_CENTRE,))
    assert exceptions(ledger.feed(tick(T0 + 60 * MINUTE))) == []  # stores are not watched; DC1's POS never spoke
    assert ledger.shown("ecommerce") == 35


def test_a_feed_s_activity_moves_no_clock():
    ledger = stocked(FallbackKind.BUFFER_UNITS, 2)
    clock = ledger.engine.state.clock
    ledger.feed(activity("S1", T0 + 99 * MINUTE))
    assert ledger.engine.state.clock == clock


def test_fallbacks_survive_the_codec_and_a_replay_gives_the_same_records():
    entries = [activity("S2", T0 + 10 * MINUTE), tick(T0 + 16 * MINUTE), receipt(3, "S1", time=T0 + 17 * MINUTE),
               activity("S1", T0 + 20 * MINUTE), tick(T0 + 21 * MINUTE), receipt(1, "S1", time=T0 + 22 * MINUTE)]
    live = stocked(FallbackKind.BUFFER_UNITS, 2)
    encoded = stocked(FallbackKind.BUFFER_UNITS, 2, store=EncodingStore())
    assert [live.apply(e) for e in entries] == [encoded.apply(e) for e in entries]
