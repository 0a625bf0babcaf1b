"""memoized_partitions: the partitioner's memo answers as the function it remembers, within its bound."""

from hypothesis import given, settings
from hypothesis import strategies as st

from app.wire.topics import ledger_partition, memoized_partitions


@settings(max_examples=60, deadline=None)
@given(keys=st.lists(st.sampled_from([f"SKU-{n}" for n in range(40)]), max_size=300),
       counts=st.lists(st.sampled_from([1, 3, 8, 12]), min_size=1, max_size=300), limit=st.integers(1, 16))
def test_memoized_partitions_answer_as_the_function_and_compute_each_key_once_while_it_fits(keys, counts, limit):
    computed: list[tuple[str, int]] = []

    def partition_of(key: str, count: int) -> int:
        computed.append((key, count))
        return ledger_partition(key, count)

    memoized = memoized_partitions(partition_of, limit)
    for index, key in enumerate(keys):
        count = counts[index % len(counts)]
        assert memoized(key, count) == ledger_partition(key, count)
    # each key and count computed once while the memo has room for every key: a memo, not a pass-through
    distinct = {(key, counts[index % len(counts)]) for index, key in enumerate(keys)}
    per_count = {count: sum(1 for _, c in distinct if c == count) for _, count in distinct}
    if all(n <= limit for n in per_count.values()):
        assert sorted(computed) == sorted(distinct)


def test_a_full_memo_starts_over_instead_of_growing():
    computed: list[str] = []
    memoized = memoized_partitions(lambda key, count: computed.append(key) or 0, limit=3)
    for key in ("a", "b", "c", "a", "d", "a", "b"):
        memoized(key, 8)
    # a, b, c fill it; a is remembered; d finds it full and starts over; then a and b are computed again
    assert computed == ["a", "b", "c", "d", "a", "b"]
