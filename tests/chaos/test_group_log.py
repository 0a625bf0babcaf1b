"""The reading of a worker's group log lines, on lines of a real run where the embedded broker wedged the group."""

from __future__ import annotations

from tests.chaos.group_log import group_events, synced_last_join, wedged_generation

HEALTHY_FOLLOWER = """\
[2026-12-07 12:18:36,961] [21302] [INFO] (Re-)joining group test-803ed66605d1
[2026-12-07 12:18:39,968] [21302] [INFO] Joined group 'test-803ed66605d1' (generation 3) with member_id faust-c539
[2026-12-07 12:18:39,972] [21302] [INFO] Successfully synced group test-803ed66605d1 with generation 3
[2026-12-07 12:18:39,974] [21302] [INFO] Setting newly assigned partitions
"""
REJOINING = HEALTHY_FOLLOWER + """\
[2026-12-07 12:18:44,045] [21302] [INFO] (Re-)joining group test-803ed66605d1
[2026-12-07 12:18:47,051] [21302] [INFO] Joined group 'test-803ed66605d1' (generation 5) with member_id faust-c539
"""
WEDGED = REJOINING + """\
[2026-12-07 12:18:52,160] [21302] [INFO] (Re-)joining group test-803ed66605d1
[2026-12-07 12:18:55,166] [21302] [INFO] Joined group 'test-803ed66605d1' (generation 5) with member_id faust-c539
[2026-12-07 12:19:00,274] [21302] [INFO] (Re-)joining group test-803ed66605d1
[2026-12-07 12:19:03,280] [21302] [INFO] Joined group 'test-803ed66605d1' (generation 5) with member_id faust-c539
"""
LEADER_OF_THE_NEXT = WEDGED + """\
[2026-12-07 12:20:56,593] [21622] [INFO] Joined group 'test-803ed66605d1' (generation 6) with member_id faust-43a4
[2026-12-07 12:20:56,594] [21622] [INFO] Elected group leader -- performing partition assignments using faust
[2026-12-07 12:20:56,598] [21622] [INFO] Successfully synced group test-803ed66605d1 with generation 6
"""


def test_joins_and_syncs_are_read_in_order():
    assert group_events(REJOINING) == [("joined", 3), ("synced", 3), ("joined", 5)]


def test_a_generation_joined_three_times_unsynced_is_the_wedge():
    assert wedged_generation(WEDGED) == 5
    assert not synced_last_join(WEDGED)


def test_a_member_that_synced_or_rejoined_once_is_not_wedged():
    assert wedged_generation(HEALTHY_FOLLOWER) is None and synced_last_join(HEALTHY_FOLLOWER)
    assert wedged_generation(REJOINING) is None and not synced_last_join(REJOINING)
    assert wedged_generation(LEADER_OF_THE_NEXT) is None and synced_last_join(LEADER_OF_THE_NEXT)
