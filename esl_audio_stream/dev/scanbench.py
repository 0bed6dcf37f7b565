"""What the crash-only resume scan costs: N parked calls carrying stream records, and the
commands a restarted daemon sends to find them (one `global_getvar` for the index, one
`uuid_getvar` per listed call), timed against the simulator. FreeSWITCH's own cost per command
is not the simulator's: the figure is the daemon's side and the round trips."""

from __future__ import annotations

import time


def run_scan(channels: int = 1000, streams: int | None = None) -> dict[str, float]:
    """`channels` parked calls, `streams` of them (all by default) with a record; returns the
    timings in seconds."""
    import gevent

    from ..app.keeper import Keeper
    from ..app.resume import StreamRecord
    from ..esl.connection import ESLConnection
    from .simulator import Simulator

    streams = channels if streams is None else streams
    sim = Simulator(port=0, extensions={"1000": "silence"})
    sim.start()
    esl = ESLConnection(*sim.address)
    esl.start()
    try:
        assert esl.wait_connected(5)
        uuids = [esl.api("originate loopback/1000/default &park()").split()[1]
                 for _ in range(channels)]
        keeper = Keeper(esl, "scan", heartbeat=60)
        record = StreamRecord(owner="scan", url="ws://127.0.0.1:9/x", mix="mono", rate=16000,
                              metadata='{"call":"x"}', source="direct", fs_port=12000,
                              udp_port=40000, started=time.time())
        t0 = time.perf_counter()
        for uuid in uuids[:streams]:
            keeper.save(uuid, record, now=True)
        write = time.perf_counter() - t0
        gevent.sleep(0.5)
        t0 = time.perf_counter()
        index = keeper.index()
        listed = time.perf_counter() - t0
        t0 = time.perf_counter()
        found = [keeper.records(uuid) for uuid in index.uuids]
        read = time.perf_counter() - t0
        assert len(found) == streams and all(r is not None for r in found)
        result = {"channels": channels, "streams": streams, "write_all": write,
                  "index": listed, "records": read, "scan": listed + read}
        print(f"{channels} parked calls, {streams} with a stream record: writing them "
              f"{write:.2f} s ({1000 * write / max(streams, 1):.2f} ms each); the scan after a "
              f"restart: index {1000 * listed:.1f} ms (one global_getvar), records "
              f"{read:.2f} s ({1000 * read / max(streams, 1):.2f} ms each), in all "
              f"{listed + read:.2f} s")
        return result
    finally:
        esl.stop()
        sim.stop()
