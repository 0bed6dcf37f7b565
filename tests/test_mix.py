"""mono/stereo/mixed framing and the frame clock, sans-IO: arrival times are generated."""

from __future__ import annotations

import itertools
import math
import random
import time
import warnings
from array import array

import pytest

from esl_audio_stream.media.mix import FrameClock, Mixer

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

P = 0.020
N = 30_000  # 10 minutes of 20 ms frames


def tone(freq: float, rate: int, samples: int, amp: int = 12000) -> bytes:
    return array(
        "h", (int(amp * math.sin(2 * math.pi * freq * i / rate)) for i in range(samples))
    ).tobytes()


def channels(stereo: bytes) -> tuple[bytes, bytes]:
    a = array("h", stereo)
    return a[0::2].tobytes(), a[1::2].tobytes()


# ---------------------------------------------------------------- Mixer


def test_stereo_left_is_caller_right_is_played_exactly():
    caller = tone(440, 16000, 320)
    played = tone(1000, 16000, 320)
    mixer = Mixer("stereo", 640)
    assert mixer.out_frame_bytes == 1280
    out = mixer.combine(caller, played)
    assert len(out) == 1280
    assert channels(out) == (caller, played)
    # independent reference: audioop's own interleave
    ref = audioop.add(audioop.tostereo(caller, 2, 1, 0), audioop.tostereo(played, 2, 0, 1), 2)
    assert out == ref
    # the reused buffer must not leak into earlier outputs, and silence resets the right channel
    out2 = mixer.combine(played, None)
    assert channels(out2) == (played, bytes(640))
    assert channels(out) == (caller, played)
    assert mixer.combine(mixer.silence, None) == bytes(1280)


def test_mixed_is_saturating_sum_and_mono_is_caller():
    caller = tone(440, 16000, 320)
    played = tone(1000, 16000, 320)
    mixed = Mixer("mixed", 640)
    assert mixed.out_frame_bytes == 640
    assert mixed.combine(caller, played) == audioop.add(caller, played, 2)
    assert mixed.combine(caller, None) is caller
    mono = Mixer("mono", 640)
    assert mono.combine(caller, played) is caller
    assert mono.out_frame_bytes == 640


def test_mixed_clips_at_full_scale():
    mixer = Mixer("mixed", 8)
    loud = array("h", [32767, -32768, 30000, -30000]).tobytes()
    also = array("h", [32767, -32768, 10000, -10000]).tobytes()
    assert array("h", mixer.combine(loud, also)).tolist() == [32767, -32768, 32767, -32768]
    stereo = Mixer("stereo", 8)  # stereo never sums, so full scale passes through untouched
    assert channels(stereo.combine(loud, also)) == (loud, also)


def test_wrong_lengths_are_fitted_and_bad_arguments_refused():
    mixer = Mixer("stereo", 8)
    short = array("h", [1, 2]).tobytes()
    long = array("h", [5, 6, 7, 8, 9, 10]).tobytes()
    left, right = channels(mixer.combine(long, short))
    assert array("h", left).tolist() == [5, 6, 7, 8]
    assert array("h", right).tolist() == [1, 2, 0, 0]
    assert len(Mixer("mixed", 8).combine(short, long)) == 8
    with pytest.raises(ValueError):
        Mixer("quad", 640)
    with pytest.raises(ValueError):
        Mixer("stereo", 641)
    with pytest.raises(ValueError):
        FrameClock(0)


# ---------------------------------------------------------------- arrival model


def sender(
    seed: int,
    n: int = N,
    *,
    jitter: float = 0.008,
    skew: float = 80e-6,
    burst_gap: float = 0.0002,
    lose_in_backlog: bool = False,
):
    """Arrival times of frames 0..n-1 as our socket reads would see them.

    Sender clock runs `skew` fast against ours; each datagram gets +-`jitter`; now and then our
    loop stalls and the 2-4 queued frames are read `burst_gap` apart (the first up to 3 slots
    late); two long stalls (0.5 s and 1.5 s) release 25 and 75 frames. About 1 in 500 frames is
    dropped, sometimes 2 in a row, after the first 200 and away from any backlog -- or, with
    `lose_in_backlog`, inside the long backlogs. Returns ([(frame index, read time)], dropped).
    """
    rnd = random.Random(seed)
    natural = [1000.0 + i * P * (1 + skew) + 0.003 + rnd.uniform(-jitter, jitter) for i in range(n)]
    times = list(natural)
    stalls = []
    i = 300
    while i < n - 100:
        if abs(i - 10_000) > 100 and abs(i - 20_000) > 100:
            stalls.append((i, rnd.choice((2, 3, 4))))
        i += rnd.randint(150, 450)
    stalls += [(10_000, 25), (20_000, 75)]
    for end, size in stalls:
        release = times[end]
        for k, j in enumerate(range(end - size + 1, end + 1)):
            times[j] = release + burst_gap * k

    def read_order(indices):
        """Reads are in order: a datagram queued behind others is read `burst_gap` later."""
        out, prev = [], -1.0
        for j in indices:
            t = times[j] if times[j] > prev else prev + burst_gap
            out.append((j, t))
            prev = t
        return out

    touched = {j for j, t in read_order(range(n)) if t != natural[j]}
    dropped = set()
    if lose_in_backlog:
        for end in (10_000, 20_000):
            dropped.update((end - 3, end + 5, end + 6))
    else:
        i = 200
        while i < n - 10:
            if rnd.random() < 1 / 500 and not touched.intersection(range(i - 5, i + 7)):
                dropped.add(i)
                if rnd.random() < 0.3:
                    dropped.add(i + 1)
                i += 10
            i += 1
    arrivals = read_order(j for j in range(n) if j not in dropped)
    assert all(b[1] > a[1] for a, b in itertools.pairwise(arrivals))
    return arrivals, dropped


def run_stream(arrivals, clock: FrameClock, mixer: Mixer, played_for_slot):
    """The shell protocol from the mix module's docstring; returns the emitted output frames."""
    out = []
    slot = 0
    held = None
    for _index, now, frame in arrivals:
        k = clock.arrive(now)
        for _ in range(k):
            out.append(mixer.combine(mixer.silence, played_for_slot(slot)))
            slot += 1
        if held is not None:
            out.append(mixer.combine(held, played_for_slot(slot)))
            slot += 1
            held = None
        if clock.holding:
            held = frame
        else:
            out.append(mixer.combine(frame, played_for_slot(slot)))
            slot += 1
    if held is not None:
        out.append(mixer.combine(held, played_for_slot(slot)))
    return out


def slots_of(arrivals, clock: FrameClock, state: dict | None = None) -> list[int]:
    """Slot index the clock gives each frame, following the same protocol. With `state`, the
    arrivals are (index, read time, arrival time, kernel drops so far), and what the clock's
    `exact` and `drops` answer is set before each, as call/reader.py does."""
    result = []
    slot = 0
    held = None
    for _index, now, *known in arrivals:
        if state is not None:
            state["t"], state["d"] = known
        slot += clock.arrive(now)
        if held is not None:
            result.append(slot)
            slot += 1
            held = None
        if clock.holding:
            held = True
        else:
            result.append(slot)
            slot += 1
    if held:
        result.append(slot)
    return result


# ---------------------------------------------------------------- FrameClock


@pytest.mark.parametrize(
    ("seed", "jitter", "burst_gap"),
    [(1, 0.008, 0.0002), (2, 0.008, 0.0002), (3, 0.008, 0.0002), (4, 0.0005, 0.012)],
)
def test_ten_minutes_with_jitter_bunching_and_loss(seed, jitter, burst_gap):
    """+-8 ms jitter with bursts read within 1 ms, or little jitter with a busy loop that
    drains a backlog one datagram every 12 ms."""
    arrivals, dropped = sender(seed, jitter=jitter, burst_gap=burst_gap)
    assert 40 <= len(dropped) <= 120
    clock = FrameClock(P)
    slots = slots_of(arrivals, clock)
    assert clock.filled == len(dropped)
    assert clock.slots == N
    assert clock.reanchors == 0
    # every frame sits in its own slot: no drift, and fills land exactly where frames were lost
    assert slots == [i for i, _ in arrivals]
    # the sender's clock at the last frame, counted in our slots, within one frame
    last_index, _ = arrivals[-1]
    assert abs(slots[-1] * P - last_index * P) < P


def test_loss_inside_a_backlog_is_counted_exactly():
    """Datagrams lost while a backlog drains leave no timing trace until it ends; the stream is
    then late by whole slots and those are filled (placed a few slots late, count exact)."""
    for gap in (0.0002, 0.012):
        arrivals, dropped = sender(11, jitter=0.0005, burst_gap=gap, lose_in_backlog=True)
        assert len(dropped) == 6
        clock = FrameClock(P)
        slots = slots_of(arrivals, clock)
        assert clock.filled == 6
        assert clock.slots == N
        assert slots[-1] == arrivals[-1][0]


def test_immediate_shell_still_fills_the_exact_count():
    """A shell that ignores `holding` gets the right number of fills, one slot late."""
    arrivals, dropped = sender(4)
    clock = FrameClock(P)
    for _i, now in arrivals:
        clock.arrive(now)
    assert clock.filled == len(dropped)
    assert clock.slots == N


def paced(start_index: int, count: int, t0: float, rnd: random.Random, jitter=0.002):
    return [(i, t0 + i * P + rnd.uniform(-jitter, jitter)) for i in range(start_index, count)]


def test_short_hole_is_filled_with_silence():
    rnd = random.Random(7)
    arrivals = paced(0, 100, 50.0, rnd) + paced(125, 300, 50.0, rnd)  # 0.5 s never sent
    clock = FrameClock(P)
    slots = slots_of(arrivals, clock)
    assert clock.filled == 25
    assert clock.reanchors == 0
    assert slots == [i for i, _ in arrivals]


def test_long_hole_reanchors_without_silence():
    """2 s with no datagram is FreeSWITCH not sending, not loss: nothing is inserted, and the
    stream resumes on a new, equally exact timeline."""
    rnd = random.Random(8)
    arrivals = paced(0, 100, 50.0, rnd) + paced(200, 400, 50.0, rnd)
    clock = FrameClock(P)
    slots = slots_of(arrivals, clock)
    assert clock.filled == 0
    assert clock.reanchors == 1
    assert slots == list(range(300))  # frames 200.. follow frame 99 directly
    assert clock.slots == 300
    # and losses after the re-anchor are still counted exactly
    more = paced(400, 700, 50.0, rnd)
    more = [(i, t) for i, t in more if i not in (500, 501, 600)]
    for _i, now in more:
        clock.arrive(now)
    assert clock.filled == 3


def test_max_fill_bounds_the_silence():
    rnd = random.Random(9)
    arrivals = paced(0, 100, 50.0, rnd) + paced(110, 200, 50.0, rnd)  # 200 ms hole
    clock = FrameClock(P, max_fill=5)
    for _i, now in arrivals:
        clock.arrive(now)
    assert (clock.filled, clock.reanchors) == (0, 1)
    clock = FrameClock(P, max_fill=10)
    for _i, now in arrivals:
        clock.arrive(now)
    assert (clock.filled, clock.reanchors) == (10, 0)


def test_long_stall_then_burst_inserts_nothing():
    """Our loop stalls 3 s; the kernel kept 150 datagrams and we read them within 15 ms."""
    rnd = random.Random(10)
    arrivals = paced(0, 100, 50.0, rnd)
    release = 50.0 + 250 * P
    arrivals += [(i, release + 0.0001 * (i - 100)) for i in range(100, 251)]
    arrivals += paced(251, 400, 50.0, rnd)
    clock = FrameClock(P)
    slots = slots_of(arrivals, clock)
    assert clock.filled == 0
    assert slots == list(range(400))


def slow_drain(lost: set[int] = frozenset()):
    """Frames sent every 20 ms; our loop stalls 300 ms at frame 100 and then drains the queue
    one datagram every 25 ms (slower than they come: a loaded machine) up to frame 200, then
    one every 1 ms until it has caught up.
    Returns ([(frame index, read time, arrival time)] of what was not lost, frames sent)."""
    rnd = random.Random(12)
    out, free = [], 0.0
    for i in range(400):
        came = 50.0 + i * P + rnd.uniform(-0.0005, 0.0005)
        if i == 100:
            free = came + 0.300
        read = came if came >= free else free
        if came < free:
            free = read + (0.025 if i < 200 else 0.001)
        if i not in lost:
            out.append((i, read, came))
    return out, 400


@pytest.mark.parametrize("lost", [set(), {140, 141}, {300}])
def test_a_slow_drain_is_no_loss_when_the_arrival_is_known(lost):
    """Read times alone make a drain slower than the sender look like loss (a documented
    limit); asked when a late-read datagram truly came (the kernel's stamp), the clock fills
    nothing for the drain and exactly what was lost, in its slot."""
    frames, sent = slow_drain(lost)
    assert max(read - came for _, read, came in frames) > 10 * P  # the loop fell far behind
    assert frames[-1][1] == frames[-1][2]  # and caught up
    clock = FrameClock(P)
    assert slots_of([(i, read) for i, read, _ in frames], clock) != [i for i, *_ in frames]
    state: dict = {}
    clock = FrameClock(P, exact=lambda: state["t"])
    result = slots_of([(i, read, came, None) for i, read, came in frames], clock, state)
    assert clock.filled == len(lost)
    assert result == [i for i, *_ in frames]
    assert clock.slots == sent


def stamped_clock(state: dict, **kw) -> FrameClock:
    return FrameClock(P, exact=lambda: state["t"], drops=lambda: state["d"], **kw)


def test_the_senders_timeline_moving_on_fills_nothing():
    """FreeSWITCH's thread held 370 ms: its timer skips ahead and the frames go on from there
    (no audio lost). Late by stamp, but the kernel dropped nothing: the timeline moves."""
    rnd = random.Random(13)
    frames = [(i, t, t, 0) for i, t in paced(0, 100, 50.0, rnd, jitter=0.0005)]
    frames += [(i, t + 0.370, t + 0.370, 0) for i, t in paced(100, 300, 50.0, rnd,
                                                                jitter=0.0005)]
    state: dict = {}
    clock = stamped_clock(state)
    assert slots_of(frames, clock, state) == list(range(300))
    assert (clock.filled, clock.shifts, clock.reanchors, clock.slots) == (0, 1, 0, 300)
    # read times alone take it for loss
    old = FrameClock(P)
    slots_of([(i, read) for i, read, *_ in frames], old)
    assert old.filled >= 18


def test_frames_the_kernel_dropped_are_filled_exactly_in_their_slots():
    """Our loop held 300 ms at frame 100; the socket holds 5 datagrams, so the kernel drops
    the 10 after them; the loop reads the 5 late, then the rest on time. The 10 are filled,
    between the 5 and the first that came after, and nothing else."""
    rnd = random.Random(14)
    sent = paced(0, 300, 50.0, rnd, jitter=0.0005)
    stall_end = sent[100][1] + 0.300
    frames, drops, queued = [], 0, 0
    for i, came in sent:
        if came < stall_end and i >= 100:
            if queued < 5:
                queued += 1
                frames.append((i, stall_end + 0.0001 * queued, came))
            else:
                drops += 1  # the kernel's count grows as they come
            continue
        frames.append((i, came, came))
    assert drops == 10
    dropped_at = {i for i, came in sent if i >= 100 and came < stall_end} - {
        i for i, *_ in frames}
    # what `dropped()` says at each read: drops that happened before it
    seen = []
    for i, read, came in frames:
        n = sum(1 for j in dropped_at if sent[j][1] <= read)
        seen.append((i, read, came, n))
    state: dict = {}
    clock = stamped_clock(state)
    assert slots_of(seen, clock, state) == [i for i, *_ in frames]
    assert (clock.filled, clock.shifts, clock.slots) == (10, 0, 300)


def test_a_hole_longer_than_max_fill_is_not_filled_even_with_drops():
    rnd = random.Random(15)
    frames = [(i, t, t, 0) for i, t in paced(0, 100, 50.0, rnd, jitter=0.0005)]
    frames += [(i, t, t, 80) for i, t in paced(180, 300, 50.0, rnd, jitter=0.0005)]
    state: dict = {}
    clock = stamped_clock(state)
    assert slots_of(frames, clock, state) == list(range(220))
    assert (clock.filled, clock.reanchors) == (0, 1)


def test_reset_starts_a_new_timeline():
    clock = FrameClock(P)
    for i in range(50):
        assert clock.arrive(10.0 + i * P) == 0
    clock.reset()  # paused for 7 s, resumed
    for i in range(50):
        assert clock.arrive(17.0 + i * P) == 0
    assert (clock.slots, clock.filled, clock.reanchors, clock.holding) == (100, 0, 0, False)


# ---------------------------------------------------------------- Mixer + FrameClock


def counter_frame(value: int, frame_bytes: int) -> bytes:
    return array("h", [value]).tobytes() * (frame_bytes // 2)


@pytest.mark.parametrize("seed", [5, 6])
def test_stereo_stays_paired_for_ten_minutes(seed):
    """Caller frame i carries i, the played frame for slot s carries s: every output frame has
    equal counters in L and R, and the silence frames are exactly the lost ones."""
    fb = 320
    arrivals, dropped = sender(seed)
    frames = [(i, t, counter_frame(i % 32000 + 1, fb)) for i, t in arrivals]
    played = [counter_frame(s % 32000 + 1, fb) for s in range(N)]
    mixer = Mixer("stereo", fb)
    out = run_stream(frames, FrameClock(P), mixer, played.__getitem__)
    assert len(out) == N
    silent = []
    for s, frame in enumerate(out):
        assert len(frame) == 2 * fb
        left, right = frame[0:2], frame[2:4]
        assert right == played[s][:2]
        if left == b"\0\0":
            silent.append(s)
        else:
            assert left == right, f"slot {s}"
        assert frame == (frame[:4] * fb)[: 2 * fb]  # the whole frame is that one pair
    assert silent == sorted(dropped)


def test_combine_cost(capsys):
    """Per-frame cost at 16 kHz (printed with -s, not asserted)."""
    caller = tone(440, 16000, 320)
    played = tone(1000, 16000, 320)
    n = 20_000
    costs = {}
    for mix in ("stereo", "mixed", "mono"):
        mixer = Mixer(mix, 640)
        combine = mixer.combine
        start = time.perf_counter()
        for _ in range(n):
            combine(caller, played)
        costs[mix] = (time.perf_counter() - start) / n * 1e6
    clock = FrameClock(P)
    arrive = clock.arrive
    start = time.perf_counter()
    for i in range(n):
        arrive(i * P)
    costs["arrive"] = (time.perf_counter() - start) / n * 1e6
    assert clock.slots == n and clock.filled == 0
    with capsys.disabled():
        print("\nper frame, 16 kHz:", ", ".join(f"{k} {v:.2f} us" for k, v in costs.items()))
