"""Many goroutines at once: 10,000 parked at the same time, then all resumed
to completion; afterwards their stacks are cached or unmapped again."""
import gc
import os

import pytest

import goloop

pytestmark = pytest.mark.usefixtures("no_leftover_goroutines")

N = 10_000


def mapping_count():
    with open("/proc/self/maps") as f:
        return sum(1 for _ in f)


def rss_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def test_ten_thousand_parked_at_once(default_stack_size):
    gc.collect()
    stats0 = goloop.stats()
    maps0, rss0 = mapping_count(), rss_bytes()

    def body(i):
        a = goloop.park(i)
        b = goloop.park(a + i)
        return (i, a, b)

    gs = [goloop.Goroutine(lambda i=i: body(i)) for i in range(N)]
    assert [g.resume() for g in gs] == list(range(N))

    stats = goloop.stats()
    assert stats["goroutines_live"] == stats0["goroutines_live"] + N
    assert stats["stacks_in_use"] == stats0["stacks_in_use"] + N
    assert stats["goroutines_started"] == stats0["goroutines_started"] + N
    assert sum(1 for g in goloop.goroutines() if g.status == "parked") >= N
    assert all(g.stack_size == default_stack_size for g in gs)
    maps_parked = mapping_count()
    # Each parked goroutine holds a mapped stack (guard page + usable part).
    assert maps_parked - maps0 >= N
    rss_parked = rss_bytes()

    # Resume them in a different order than they parked, twice.
    order = list(range(0, N, 2)) + list(range(1, N, 2))
    for i in order:
        assert gs[i].resume(1) == 1 + i
    results = [gs[i].resume(-i) for i in reversed(order)]
    assert sorted(results) == [(i, 1, -i) for i in range(N)]
    assert all(g.status == "finished" for g in gs)
    del gs, results
    gc.collect()

    stats = goloop.stats()
    assert stats["goroutines_live"] == stats0["goroutines_live"]
    assert stats["stacks_in_use"] == stats0["stacks_in_use"]
    assert stats["goroutines_finished"] == stats0["goroutines_finished"] + N
    # Stacks went back to the cache, and what the cache does not keep was
    # unmapped: the mappings are back to where they were (+20,000 while
    # parked), give or take the cached stacks (two mappings each: guard page
    # and usable part), cached frame data-stack chunks (one each, unless
    # merged with a neighbour) and some pymalloc arenas still partly used.
    assert stats["stacks_cached"] < N
    assert mapping_count() <= (maps0 + 2 * stats["stacks_cached"]
                               + stats["data_chunks_cached"] + 64)
    assert stats["stacks_mapped"] + stats["stacks_reused"] >= (
        stats0["stacks_mapped"] + stats0["stacks_reused"] + N)
    rss_after = rss_bytes()
    print(f"\n{N} parked goroutines: +{(rss_parked - rss0) >> 20} MiB RSS, "
          f"+{maps_parked - maps0} mappings; after: +{(rss_after - rss0) >> 20} MiB, "
          f"{stats['stacks_cached']} stacks cached")
    assert rss_after - rss0 < (rss_parked - rss0) / 2 + (16 << 20)


def test_ten_thousand_small_stacks_nested_resumes():
    # Goroutines resumed from other goroutines, all parked at once.
    gs = [goloop.Goroutine(lambda i=i: goloop.park(i) + 1,
                           stack_size=goloop._goloop.MIN_STACK_SIZE)
          for i in range(N)]

    def starter(chunk):
        return [g.resume() for g in chunk]

    starters = [goloop.Goroutine(lambda c=gs[k:k + 100]: starter(c))
                for k in range(0, N, 100)]
    started = [x for s in starters for x in s.resume()]
    assert started == list(range(N))
    assert sum(g.resume(g.goid) == g.goid + 1 for g in gs) == N
