"""The approximate-time synchronisers: pairing, slop, queue size, duplicates; crash, stall
and counting regressions (issue 14); a property test of both implementations against a
brute-force reference of the documented pairing."""

import importlib.util
import itertools
from pathlib import Path
from types import SimpleNamespace

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from d3p_ros.synchronizer import (ApproximateStampSynchronizer, MessageFiltersSynchronizer,
                                  make_synchronizer, message_filters_available)


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
    assert sync.dropped == 2
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


# --- issue 14: crash, stall, counting; and the property test against a reference ---------

def test_late_message_after_unpaired_pile_up_does_not_crash():
    # Defect 1: a late 3D message used to evict itself from its full queue... then be popped.
    sync, pairs = make(queue_size=10)
    for t in range(100, 110):
        sync.add(0, msg(t * 1000))                  # ten unpaired 2D, 100 s ... 109 s
    sync.add(1, msg(50_000))
    sync.add(0, msg(50_000))                        # KeyError before the fix
    assert [(a.t, b.t) for a, b in pairs] == [(50_000, 50_000)]
    assert sync.received == 12 and sync.pairs == 1
    assert sync.received == 2 * sync.pairs + sync.dropped + sync.queued()


def test_future_stamped_leftovers_do_not_stall_the_queue():
    # Defect 2: ten far-future 2D without partner filled the queue, and eviction by smallest
    # stamp then pushed out every new message on arrival: nothing was paired again.
    sync, pairs = make(queue_size=10)
    for i in range(10):
        sync.add(0, msg(10**9 + i))                 # ~11.6 days ahead
    for i in range(20):
        sync.add(0, msg(1000 + 20 * i))
        sync.add(1, msg(1000 + 20 * i))
    assert [a.t for a, _ in pairs] == [1000 + 20 * i for i in range(20)]
    # one leftover made room (counted); the others wait harmlessly, and go whenever room is needed
    assert sync.dropped == 1 and sync.queued() == 9
    for i in range(9):
        sync.add(0, msg(2000 + 20 * i))             # the 3D stream lags behind
    assert sync.dropped == 9 and sync.queued() == 10


def test_stamp_jump_back_after_unpaired_messages_keeps_pairing():
    sync, pairs = make(queue_size=5)
    for i in range(8):
        sync.add(0, msg(5000 + 20 * i))             # 2D only, then the source restarts
    for i in range(10):
        sync.add(0, msg(20 * i))
        sync.add(1, msg(20 * i))
    assert [a.t for a, _ in pairs] == [20 * i for i in range(10)]


def test_replaced_duplicate_is_counted():
    sync, pairs = make()
    sync.add(0, msg(10, "old"))
    sync.add(0, msg(10, "new"))
    assert sync.dropped == 1 and sync.queued() == 1


def test_clear_counts_what_it_forgets():
    sync, _ = make()
    sync.add(0, msg(10))
    sync.add(1, msg(500))
    sync.clear()
    assert sync.dropped == 2 and sync.received == 2


# The stand-in for ROS 2's Python message_filters (tests/stand_ins/message_filters.py), loaded
# from its path: on sys.path it would be taken for the real one.
_spec = importlib.util.spec_from_file_location(
    "stand_in_message_filters", Path(__file__).parent / "stand_ins" / "message_filters.py")
STAND_IN = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(STAND_IN)


def test_message_filters_wrapper_counts_unpaired():
    # Defect 7: with message_filters, dropped_unpaired stayed 0 (it reports no evictions).
    pairs = []
    sync = MessageFiltersSynchronizer(2, 10, 0.01, lambda *m: pairs.append(m), module=STAND_IN)
    for i in range(100):
        sync.add(0, msg(20 * i))                    # 2D only
    assert sync.dropped == 90 and sync.queued() == 10 and pairs == []
    sync.add(1, msg(20 * 99))
    assert len(pairs) == 1 and sync.pairs == 1 and sync.dropped == 90


def test_message_filters_wrapper_does_not_stall_on_future_leftovers():
    pairs = []
    sync = MessageFiltersSynchronizer(2, 10, 0.01, lambda *m: pairs.append(m), module=STAND_IN)
    for i in range(10):
        sync.add(0, msg(10**9 + i))
    for i in range(5):
        sync.add(0, msg(1000 + 20 * i))
        sync.add(1, msg(1000 + 20 * i))
    assert len(pairs) == 5 and sync.dropped == 1 and sync.queued() == 9


def reference_pairing(events, num_inputs, queue_size, slop_ns):
    """Brute force over the documented semantics: which message ids pair, in what order,
    and how many messages left without a partner. `events`: (input, stamp_ns, id)."""
    queues = [[] for _ in range(num_inputs)]      # [stamp, id] in insertion order
    pairs, dropped = [], 0
    for index, stamp, mid in events:
        queue = queues[index]
        same = [e for e in queue if e[0] == stamp]
        if same:                                    # replaced in place, keeps its position
            same[0][1] = mid
            dropped += 1
        else:
            if len(queue) >= queue_size:            # the stamp farthest from the new one goes
                far = max(queue, key=lambda e: (abs(e[0] - stamp), -e[0]))
                queue.remove(far)
                dropped += 1
            queue.append([stamp, mid])
        me = next(e for e in queue if e[0] == stamp)
        best = None
        others = [i for i in range(num_inputs) if i != index]
        for combo in itertools.product(*(queues[i] for i in others)):
            if any(abs(e[0] - stamp) > slop_ns for e in combo):
                continue
            stamps = [e[0] for e in combo] + [stamp]
            if max(stamps) - min(stamps) >= slop_ns:
                continue
            # nearest first per input, ties in queue order; inputs compared in order
            rank = tuple((abs(e[0] - stamp), queues[i].index(e)) for i, e in zip(others, combo))
            if best is None or rank < best[0]:
                best = (rank, combo)
        if best is not None:
            chosen = list(best[1])
            chosen.insert(index, me)
            pairs.append(tuple(e[1] for e in chosen))
            for q, e in zip(queues, chosen):
                q.remove(e)
    return pairs, dropped, sum(len(q) for q in queues)


MS = 1_000_000


@st.composite
def streams(draw):
    """Two inputs at 50 Hz with jitter, drops, reordering, duplicates, stamp jumps both
    ways and stray far-future or far-past messages."""
    events, t = [], draw(st.integers(0, 10**6)) * MS
    for _ in range(draw(st.integers(0, 60))):
        kind = draw(st.sampled_from(["pair"] * 6 + ["only_2d", "only_3d", "jump", "stray", "swap"]))
        if kind == "jump":
            t += draw(st.sampled_from([-1, 1])) * draw(st.integers(1, 10**4)) * MS
            continue
        if kind == "stray":
            events.append((draw(st.integers(0, 1)), t + draw(st.sampled_from([-1, 1])) * 10**15))
            continue
        jitter = [draw(st.integers(-4, 4)) * MS + draw(st.integers(0, 999)) for _ in range(2)]
        pair = [(0, t + jitter[0]), (1, t + jitter[1])]
        if kind == "only_2d":
            pair = pair[:1]
        elif kind == "only_3d":
            pair = pair[1:]
        elif kind == "swap":
            pair.reverse()
        events += pair
        if draw(st.integers(0, 9)) == 0:
            events.append(draw(st.sampled_from(pair)))      # duplicate stamp
        t += 20 * MS
    return events


def implementations():
    yield "d3p", lambda n, q, s, cb: ApproximateStampSynchronizer(n, q, s, cb)
    yield "message_filters stand-in", lambda n, q, s, cb: MessageFiltersSynchronizer(n, q, s, cb, module=STAND_IN)
    if message_filters_available():
        yield "message_filters", lambda n, q, s, cb: MessageFiltersSynchronizer(n, q, s, cb)


def stamped(stamp_ns: int, mid: int):
    # builtin_interfaces/Time where installed: real message_filters reads it with Time.from_msg
    try:
        from builtin_interfaces.msg import Time
    except ImportError:
        Time = SimpleNamespace
    stamp = Time(sec=stamp_ns // 1_000_000_000, nanosec=stamp_ns % 1_000_000_000)
    return SimpleNamespace(header=SimpleNamespace(stamp=stamp), id=mid)


@pytest.mark.parametrize("name, factory", list(implementations()), ids=[n for n, _ in implementations()])
@settings(max_examples=150, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(events=streams(), queue_size=st.integers(1, 6), slop_ms=st.sampled_from([1, 5, 10, 30]))
def test_pairs_what_the_reference_pairs_and_never_stalls(name, factory, events, queue_size, slop_ms):
    slop_ns = slop_ms * MS
    # builtin_interfaces/Time is unsigned: shift every stamp to >= 2000 s, leaving room below
    low = min([s for _, s in events], default=0)
    events = [(i, s - low + 2 * 10**12, n) for n, (i, s) in enumerate(events)]
    got = []
    sync = factory(2, queue_size, slop_ms / 1000, lambda *m: got.append(tuple(x.id for x in m)))
    for index, stamp, mid in events:
        sync.add(index, stamped(stamp, mid))        # never raises
    want, dropped, queued = reference_pairing(events, 2, queue_size, slop_ns)
    assert got == want
    assert sync.dropped == dropped and sync.queued() == queued
    assert sync.received == len(events) == 2 * sync.pairs + sync.dropped + sync.queued()
    # never stalls: after whatever came before, matched input beyond every stamp seen so
    # far, and before every one (a source restarted at an earlier time), pairs at once
    stamps = [s for _, s, _ in events] or [2 * 10**12]
    for start in (max(stamps) + 10**9, min(stamps) - 10**12):
        got.clear()
        for k in range(queue_size + 3):
            stamp = start + k * 20 * MS
            sync.add(0, stamped(stamp, -1 - 2 * k))
            sync.add(1, stamped(stamp, -2 - 2 * k))
        assert got == [(-1 - 2 * k, -2 - 2 * k) for k in range(queue_size + 3)]


@settings(max_examples=60, deadline=None, database=None)
@given(events=st.lists(st.tuples(st.integers(0, 2), st.integers(0, 60)), max_size=40),
       queue_size=st.integers(1, 4))
def test_three_inputs_pair_what_the_reference_pairs(events, queue_size):
    events = [(i, s * MS, n) for n, (i, s) in enumerate(events)]
    got = []
    sync = ApproximateStampSynchronizer(3, queue_size, 0.005, lambda *m: got.append(tuple(x.id for x in m)))
    for index, stamp, mid in events:
        sync.add(index, stamped(stamp, mid))
    want, dropped, queued = reference_pairing(events, 3, queue_size, 5 * MS)
    assert got == want and sync.dropped == dropped and sync.queued() == queued
