"""Who may use the control endpoint: the bearer token, /metrics' own switch, the status page's
cookie, and requests from other sites' pages; over real HTTP and WebSocket connections."""

from __future__ import annotations

import json

import pytest
from conftest import wait_until
from helpers.calls import originate
from helpers.daemons import TOKEN, make_daemon
from httpc import feed_messages, feed_until_closed, request
from websockets.exceptions import InvalidStatus

from esl_audio_stream.app.config import DaemonConfig
from esl_audio_stream.app.daemon import Daemon
from esl_audio_stream.service import build_daemon


@pytest.fixture(params=[True, False], ids=["metrics-public", "metrics-private"])
def guarded(request, fs, tmp_path):
    d = make_daemon(fs, tmp_path, control_token=TOKEN, metrics_public=request.param)
    try:
        yield d
    finally:
        d.stop()


def base(d: Daemon) -> str:
    host, port = d.control.address
    return f"http://{host}:{port}"


def bearer(token: str = TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_token_required_for_everything_but_public_metrics(guarded):
    url = base(guarded)
    cmd = b"0000-no-such-call stop"
    for headers in ({}, bearer("wrong"), {"Authorization": TOKEN}, bearer(TOKEN + "x")):
        code, h, body = request(url + "/api/uuid_audio_stream", "POST", cmd, headers)
        assert code == 401 and h["www-authenticate"] == "Bearer", (headers, body)
        assert body.startswith(b"-ERR unauthorized")
        assert request(url + "/streams", headers=headers)[0] == 401
    code, _, body = request(url + "/api/uuid_audio_stream", "POST", cmd, bearer())
    assert (code, body) == (200, b"-ERR no audio stream on 0000-no-such-call\n")
    code, _, body = request(url + "/streams", headers=bearer())
    assert (code, json.loads(body)) == (200, [])

    public = guarded.config.metrics_public
    code, _, body = request(url + "/metrics")
    assert code == (200 if public else 401)
    code, _, body = request(url + "/metrics", headers=bearer())
    assert code == 200 and b"esl_audio_stream_streams_active 0.0" in body


def test_status_page_takes_the_token_once_and_keeps_it_in_a_cookie(guarded):
    url = base(guarded)
    assert request(url + "/status")[0] == 401
    assert request(url + "/status?token=wrong")[0] == 401
    code, h, _ = request(url + "/status?token=" + TOKEN.replace(" ", "%20").replace(";", "%3B")
                         .replace("=", "%3D").replace("/", "%2F"))
    assert code == 303 and h["location"] == "/status"  # the token leaves the address bar
    cookie = h["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/status" in cookie
    pair = cookie.split(";")[0]
    code, h, body = request(url + "/status", headers={"Cookie": pair})
    assert code == 200 and h["content-type"].startswith("text/html")
    assert b"/status/feed" in body
    assert request(url + "/status", headers=bearer())[0] == 200
    # the cookie opens the page and its feed, never commands or the stream list
    assert request(url + "/streams", headers={"Cookie": pair})[0] == 401
    assert request(url + "/api/uuid_audio_stream", "POST", b"x stop",
                   {"Cookie": pair})[0] == 401

    ws = url.replace("http:", "ws:") + "/status/feed"
    with pytest.raises(InvalidStatus) as refused:
        feed_messages(ws)
    assert refused.value.response.status_code == 401
    with pytest.raises(InvalidStatus):
        feed_messages(ws + "?token=wrong")
    for kw in ({"headers": {"Cookie": pair}}, {"headers": bearer()}):
        msg = json.loads(feed_messages(ws, **kw)[0])
        assert msg["streams"] == [] and msg["esl"] is True
    # a plain GET of the feed is told what it is
    assert request(url + "/status/feed", headers=bearer())[0] == 426


def test_other_sites_pages_are_refused(fs, tmp_path, daemon, esl, peer):
    url = base(daemon)  # no token: loopback only
    host = url.removeprefix("http://")
    code, _, body = request(url + "/api/uuid_audio_stream", "POST", b"x stop",
                            {"Origin": "http://evil.example"})
    assert code == 403 and b"origin" in body
    # DNS rebinding: a name that points at 127.0.0.1 is not trusted without a token
    assert request(url + "/streams", headers={"Host": "evil.example:80"})[0] == 403
    assert request(url + "/streams", headers={"Host": host})[0] == 200
    assert request(url + "/streams", headers={"Host": host, "Origin": url})[0] == 200

    ws = url.replace("http:", "ws:") + "/status/feed"
    with pytest.raises(InvalidStatus) as refused:
        feed_messages(ws, origin="http://evil.example")
    assert refused.value.response.status_code == 403
    uuid = originate(esl)
    assert daemon.execute(f"{uuid} start {peer.url()} mono 8k") == "+OK Success\n"
    assert wait_until(lambda: daemon.streams[uuid].frames_in > 5)
    msgs = [json.loads(m) for m in feed_messages(ws, n=3, origin=url)]
    rows = msgs[-1]["streams"]
    assert [r["uuid"] for r in rows] == [uuid] and rows[0]["state"] == "streaming"
    assert rows[0]["level_db"] > -20  # the simulator's 440 Hz tone
    assert msgs[-1]["columns"][0] == "uuid"
    esl.api(f"uuid_kill {uuid}")


def test_a_non_loopback_control_address_needs_a_token(fs, tmp_path):
    with pytest.raises(ValueError, match="needs a token"):
        build_daemon(DaemonConfig(esl_host=fs[0], esl_port=fs[1], control_host="0.0.0.0",
                                  control_port=0))
    with pytest.raises(ValueError, match="needs a token"):
        build_daemon(DaemonConfig(esl_host=fs[0], esl_port=fs[1],
                                  control_host="myhost.example", control_port=0))
    # loopback in any spelling needs none (not started: nothing is bound)
    for host in ("127.0.0.1", "127.0.0.2", "::1", "localhost"):
        build_daemon(DaemonConfig(esl_host=fs[0], esl_port=fs[1], control_host=host,
                                  control_port=0))


def test_feeds_end_when_the_daemon_stops(fs, tmp_path):
    d = make_daemon(fs, tmp_path)
    url = base(d).replace("http:", "ws:") + "/status/feed"
    try:
        pages = [feed_until_closed(url) for _ in range(2)]
        assert wait_until(lambda: d.control.feeds == 2, 5)
    finally:
        d.stop()
    for page in pages:
        n, code = page.get(timeout=10)
        assert n >= 1 and code == 1001  # going away
    assert d.control.feeds == 0
