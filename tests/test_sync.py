"""The project's approximate-time synchroniser: pairing, slop, queue size, duplicates."""

from types import SimpleNamespace

import pytest

from d3p_ros.synchronizer import ApproximateStampSynchronizer, make_synchronizer


def msg(t_ms: float, tag: str = ""):
    ns = int(round(t_ms * 1e6))
    stamp = SimpleNamespace(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)
    return SimpleNamespace(header=SimpleNamespace(stamp=stamp), tag=tag, t=t_ms)


def make(queue_size=10, slop=0.01, inputs=2):
    pairs = []
    sync = ApproximateStampSynchronizer(inputs, queue_size, slop, lambda *m: pairs.append(m))
    return sync, pairs


def test_exact_stamps_pair_once():
    sync, pairs = make()
    sync.add(0, msg(100, "a"))
    assert pairs == []
    sync.add(1, msg(100, "b"))
    assert [(a.tag, b.tag) for a, b in pairs] == [("a", "b")]
    assert sync.queued() == 0


def test_within_slop_pairs_outside_does_not():
    sync, pairs = make(slop=0.010)
    sync.add(0, msg(100))
    sync.add(1, msg(115))           # 15 ms > 10 ms slop
    assert pairs == []
    sync.add(1, msg(105))           # 5 ms
    assert [(a.t, b.t) for a, b in pairs] == [(100, 105)]
    assert sync.queued() == 1       # the 115 ms message waits for a partner


def test_nearest_candidate_wins():
    sync, pairs = make(slop=0.020)
    sync.add(1, msg(90))
    sync.add(1, msg(104))
    sync.add(1, msg(112))
    sync.add(0, msg(100))
    assert [(a.t, b.t) for a, b in pairs] == [(100, 104)]


def test_order_of_arguments_follows_inputs_not_arrival():
    sync, pairs = make()
    sync.add(1, msg(50, "second"))
    sync.add(0, msg(50, "first"))
    assert [(a.tag, b.tag) for a, b in pairs] == [("first", "second")]


def test_queue_size_evicts_oldest():
    sync, pairs = make(queue_size=3)
    for t in (10, 20, 30, 40, 50):
        sync.add(0, msg(t))
    assert sync.evicted == 2
    sync.add(1, msg(10))            # its partner was evicted
    assert pairs == []
    sync.add(1, msg(50))
    assert [(a.t, b.t) for a, b in pairs] == [(50, 50)]


def test_clear_forgets_waiting_messages():
    sync, pairs = make()
    sync.add(0, msg(10))
    sync.clear()
    sync.add(1, msg(10))
    assert pairs == [] and sync.queued() == 1


def test_duplicate_stamp_replaces_queued_message():
    sync, pairs = make()
    sync.add(0, msg(10, "old"))
    sync.add(0, msg(10, "new"))
    sync.add(1, msg(10))
    assert [a.tag for a, _ in pairs] == ["new"]


def test_different_rates_30_vs_25_hz():
    # 2D at 30 Hz, 3D at 25 Hz over 1 s: stamps coincide every 200 ms (6 vs 5 frames);
    # with a 5 ms slop only those pair, each message at most once.
    sync, pairs = make(queue_size=20, slop=0.005)
    events = [(i * 1000 / 30, 0) for i in range(30)] + [(i * 1000 / 25, 1) for i in range(25)]
    for t, index in sorted(events):
        sync.add(index, msg(t))
    got = [(round(a.t), round(b.t)) for a, b in pairs]
    assert got == [(0, 0), (200, 200), (400, 400), (600, 600), (800, 800)]
    assert all(abs(a.t - b.t) < 5 for a, b in pairs)


def test_three_inputs_need_all():
    sync, pairs = make(inputs=3, slop=0.010)
    sync.add(0, msg(100))
    sync.add(1, msg(102))
    assert pairs == []
    sync.add(2, msg(98))
    assert len(pairs) == 1 and [m.t for m in pairs[0]] == [100, 102, 98]


def test_spread_must_be_below_slop_across_all_inputs():
    # Each is within slop of the newest, but the other two are 16 ms apart.
    sync, pairs = make(inputs=3, slop=0.010)
    sync.add(0, msg(92))
    sync.add(1, msg(108))
    sync.add(2, msg(100))
    assert pairs == []


@pytest.mark.parametrize("kwargs", [dict(num_inputs=1, queue_size=5, slop=0.1),
                                    dict(num_inputs=2, queue_size=0, slop=0.1),
                                    dict(num_inputs=2, queue_size=5, slop=0.0)])
def test_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        ApproximateStampSynchronizer(callback=print, **kwargs)


def test_factory_falls_back_without_message_filters():
    sync = make_synchronizer(2, 5, 0.01, print, prefer_message_filters=False)
    assert isinstance(sync, ApproximateStampSynchronizer)
    assert make_synchronizer(2, 5, 0.01, print).backend in ("d3p", "message_filters")
