"""A short soak (scripts/soak): 40 simulated calls for a minute, one ending and one starting
every second (a quarter of them bridged and streamed stereo, recorded into a FIFO; half ended by
a stop command): nothing the daemon holds grows. The long run's figures are in the README."""

from __future__ import annotations

import pytest

from esl_audio_stream.dev.soak import run_soak


@pytest.mark.skipif(__import__("os").environ.get("EAS_REAL_FREESWITCH", "") != "",
                    reason="runs its own simulator")
def test_a_minute_of_churn_leaks_nothing(capsys):
    rows = run_soak(calls=40, minutes=1.0, every=20.0, quiet=True)
    with capsys.disabled():
        from esl_audio_stream.dev.soak import COLUMNS, _format

        print("\n" + _format(dict(zip(COLUMNS, COLUMNS, strict=True))))
        for row in rows:
            print(_format(row))
    assert len(rows) >= 4
    warm, last = rows[1], rows[-1]  # after the first churn: every kind of greenlet has run
    assert all(r["streams"] == 40 for r in rows)
    assert last["fds"] <= warm["fds"] + 4  # a leaked socket or watcher would add one per call
    assert last["greenlets"] <= warm["greenlets"] + 8  # a stream or two may be stopping
    assert last["ports"] <= warm["ports"] + 2 and last["held"] == 0
    assert last["files"] == 0
    assert last["rss_mib"] - warm["rss_mib"] < 4.0  # 60 streams came and went meanwhile
