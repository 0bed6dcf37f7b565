"""Which worker owns a call (app/shard.py), sans-IO: the shard FreeSWITCH's regex filter finds is
the shard the daemon computes; the port range split with nothing shared; the ESL filters."""

from __future__ import annotations

import random
import re
import uuid as _uuid

import pytest

from esl_audio_stream.app.shard import WHOLE, Shard, ShardPorts, shard_of, uuid_regex
from esl_audio_stream.dev.simulator.events import Event as SimEvent
from esl_audio_stream.dev.simulator.events import Subscription

ODD = ["", "a", "zz", "0z", "z0", "ABCDEF", "x-1F", "ff", "FF", "0", "uuid-with-dashes-",
       "12345678-1234-1234-1234-1234567890Ag"]


@pytest.mark.parametrize("count", [2, 3, 4, 7])
def test_the_regex_finds_exactly_the_uuids_of_its_shard(count):
    rng = random.Random(count)
    uuids = [str(_uuid.UUID(int=rng.getrandbits(128))) for _ in range(2000)] + ODD
    uuids += [u.upper() for u in uuids[:50]]
    patterns = [re.compile(uuid_regex(i, count)) for i in range(count)]
    for u in uuids:
        found = [i for i, p in enumerate(patterns) if p.search(u)]
        assert found == [shard_of(u, count)], u
    shares = [sum(shard_of(u, count) == i for u in uuids[:2000]) for i in range(count)]
    assert min(shares) > 2000 / count * 0.8  # v4 uuids spread evenly


def test_a_uuid_without_two_hex_digits_at_its_end_is_worker_0s():
    assert all(shard_of(u, 3) == 0 for u in ["", "a", "zz", "0z", "z0", "x-1"])
    assert shard_of("...ff", 2) == 1 and shard_of("...FE", 2) == 0  # 255 % 2, 254 % 2


def test_the_whole_daemon_owns_everything_and_filters_nothing():
    assert WHOLE.filters() == [] and WHOLE.owns("anything") and WHOLE.intake
    assert not WHOLE.sharded and WHOLE.foreign("/nonexistent") == set()


def _ev(name: str, **headers: str) -> SimEvent:
    ev = SimEvent(name, headers.pop("subclass", None))
    ev.add("Event-Name", name)
    for k, v in headers.items():
        ev.add(k.replace("_", "-") if k != "tap_of" else "variable_esl_audio_stream_tap_of", v)
    return ev


def test_a_worker_s_filters_as_freeswitch_applies_them():
    """Worker 1 of 2: its calls' events and its taps' only; worker 0 also every park and destroy
    and the command event (the simulator matches filters as mod_event_socket does)."""
    mine = "6f1c7e32-59a1-4c5e-9b1a-2d3c4e5f6a01"  # 0x01: odd
    theirs = "6f1c7e32-59a1-4c5e-9b1a-2d3c4e5f6a02"
    subs = []
    for index in (0, 1):
        sub = Subscription()
        sub.event(["plain", "ALL"])
        for header, value in Shard(index, 2).filters():
            assert sub.filter(f"{header} {value}").startswith("+OK filter added")
        subs.append(sub)
    w0, w1 = subs
    assert w1.wants(_ev("CHANNEL_HANGUP", Unique_ID=mine))
    assert not w1.wants(_ev("CHANNEL_HANGUP", Unique_ID=theirs))
    assert w1.wants(_ev("CHANNEL_HANGUP", Unique_ID="tap-leg-uuid-99", tap_of=mine))
    assert not w1.wants(_ev("CHANNEL_PARK", Unique_ID=theirs))
    assert not w1.wants(_ev("CUSTOM", subclass="esl_audio_stream::command",
                            Event_Subclass="esl_audio_stream::command"))
    assert w0.wants(_ev("CHANNEL_PARK", Unique_ID=mine))  # auto-start: every park
    assert w0.wants(_ev("CHANNEL_DESTROY", Unique_ID=mine))
    assert not w0.wants(_ev("CHANNEL_HANGUP", Unique_ID=mine))
    assert not w0.wants(_ev("DTMF", Unique_ID=mine))
    assert w0.wants(_ev("CUSTOM", subclass="esl_audio_stream::command",
                        Event_Subclass="esl_audio_stream::command"))
    assert w0.wants(_ev("BACKGROUND_JOB")) and w1.wants(_ev("BACKGROUND_JOB"))
    assert Shard(0, 2).expected("CHANNEL_PARK", mine, None)
    assert not Shard(0, 2).expected("CHANNEL_HANGUP", mine, None)
    assert not Shard(1, 2).expected("CHANNEL_PARK", theirs, None)


def test_the_port_range_is_split_and_a_stray_port_is_claimed_not_handed_out():
    parts = [Shard(i, 3).port_slice(12000, 12010) for i in range(3)]
    assert parts == [(12000, 12002), (12003, 12005), (12006, 12010)]
    pool = Shard(0, 3).ports(12000, 12010, None)
    assert isinstance(pool, ShardPorts)
    taken = {pool.take() for _ in range(3)}
    assert taken == {12000, 12001, 12002}
    with pytest.raises(RuntimeError):
        pool.take()
    assert pool.claim(12007) and not pool.claim(12007)  # carried on from a run with 2 workers
    assert not pool.claim(13000)  # outside the range
    assert pool.in_use == 4
    pool.give(12007)  # back to worker 2's line, never to this one's
    assert pool.in_use == 3
    with pytest.raises(RuntimeError):
        pool.take()
    with pytest.raises(ValueError):
        Shard(0, 20).port_slice(12000, 12010)


def test_the_other_workers_call_directories_are_left_alone(tmp_path):
    for name in ("aaaa-00", "aaaa-01", "aaaa-02", "aaaa-03"):
        (tmp_path / name).mkdir()
    assert Shard(0, 2).foreign(str(tmp_path)) == {"aaaa-01", "aaaa-03"}
    assert Shard(1, 2).foreign(str(tmp_path)) == {"aaaa-00", "aaaa-02"}
