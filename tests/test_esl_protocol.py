"""The sans-IO ESL parser and command builders, fed the exact bytes mod_event_socket writes."""

import pytest

from esl_audio_stream.esl.protocol import (
    MAX_BODY_BYTES,
    MAX_HEADER_BYTES,
    CommandInjectionError,
    ESLParser,
    ESLProtocolError,
    Event,
    Message,
    cmd_api,
    cmd_auth,
    cmd_bgapi,
    cmd_event_plain,
    cmd_exit,
    cmd_sendevent,
    cmd_sendmsg,
)

AUTH_REQUEST = b"Content-Type: auth/request\n\n"
AUTH_OK = b"Content-Type: command/reply\nReply-Text: +OK accepted\n\n"
API_BODY = b"\n0 total.\n"
API_RESPONSE = b"Content-Type: api/response\nContent-Length: %d\n\n%s" % (len(API_BODY), API_BODY)
BGAPI_REPLY = (
    b"Content-Type: command/reply\nReply-Text: +OK Job-UUID: 7f4db78a-17d7-11dd-b7a0-db4edd065621"
    b"\nJob-UUID: 7f4db78a-17d7-11dd-b7a0-db4edd065621\n\n"
)
DISCONNECT = b"Disconnected, goodbye.\nSee you at ClueCon! http://www.cluecon.com/\n"
DISCONNECT_NOTICE = b"Content-Type: text/disconnect-notice\nContent-Length: %d\n\n%s" % (
    len(DISCONNECT),
    DISCONNECT,
)
LINGER_NOTICE = (
    b"Content-Type: text/disconnect-notice\nControlled-Session-UUID: abc\n"
    b"Content-Disposition: linger\nChannel-Name: loopback/1000-a\nLinger-Time: 0\n"
    b"Content-Length: 0\n\n"
)


def event_plain(inner_headers: bytes, body: bytes | None = None) -> bytes:
    """What mod_event_socket writes for one event (switch_event_serialize + outer frame)."""
    payload = inner_headers
    payload += b"Content-Length: %d\n\n%s" % (len(body), body) if body else b"\n"
    return b"Content-Length: %d\nContent-Type: text/event-plain\n\n%s" % (len(payload), payload)


PARK_HEADERS = (
    b"Event-Name: CHANNEL_PARK\n"
    b"Core-UUID: 6a6b5b1e-0000-0000-0000-000000000001\n"
    b"Event-Date-Local: 2026-08-01%2012%3A00%3A00\n"
    b"Channel-Name: loopback/1000-a\n"
    b"Unique-ID: 11111111-2222-3333-4444-555555555555\n"
    b"variable_STREAM_EXTRA_HEADERS: %7B%22X-A%22%3A%22yes%22%7D\n"
    b"variable_multi: line1%0Aline2%0D%0A%25literal\n"
)
PARK_EVENT = event_plain(PARK_HEADERS)
JOB_BODY = b"bar baz"
JOB_EVENT = event_plain(
    b"Event-Name: BACKGROUND_JOB\n"
    b"Job-UUID: 7f4db78a-17d7-11dd-b7a0-db4edd065621\n"
    b"Job-Command: uuid_getvar\n"
    b"Job-Command-Arg: 1111%20FOO\n",
    JOB_BODY,
)
CUSTOM_BODY = b'{"type":"transcript",\n\n"text":"100% sure: a%20b"}\n'
CUSTOM_EVENT = event_plain(
    b"Event-Name: CUSTOM\n"
    b"Event-Subclass: mod_audio_stream%3A%3Ajson\n"
    b"Unique-ID: 11111111-2222-3333-4444-555555555555\n"
    # sendevent'ed events also carry their Content-Length as an ordinary header
    + b"Content-Length: %d\n"
    % len(CUSTOM_BODY),
    CUSTOM_BODY,
)

STREAM = (
    AUTH_REQUEST
    + AUTH_OK
    + API_RESPONSE
    + BGAPI_REPLY
    + PARK_EVENT
    + JOB_EVENT
    + CUSTOM_EVENT
    + LINGER_NOTICE
    + DISCONNECT_NOTICE
)


def drain(parser: ESLParser) -> list:
    out = []
    while (msg := parser.next_message()) is not None:
        out.append(msg)
    return out


def check_stream(msgs: list) -> None:
    assert len(msgs) == 9
    auth, ok, api, bg, park, job, custom, linger, disco = msgs

    assert isinstance(auth, Message) and auth.content_type == "auth/request" and auth.body == b""
    assert ok.content_type == "command/reply" and ok.reply_text == "+OK accepted"

    assert api.content_type == "api/response" and api.body == API_BODY and api.reply_text == ""

    assert bg.reply_text == "+OK Job-UUID: 7f4db78a-17d7-11dd-b7a0-db4edd065621"
    assert bg.headers["Job-UUID"] == "7f4db78a-17d7-11dd-b7a0-db4edd065621"

    assert isinstance(park, Event)
    assert park.name == "CHANNEL_PARK"
    assert park.uuid == "11111111-2222-3333-4444-555555555555"
    assert park.subclass == ""
    assert park.body == b""
    assert park.headers["Event-Date-Local"] == "2026-08-01 12:00:00"
    assert park.get("variable_STREAM_EXTRA_HEADERS") == '{"X-A":"yes"}'
    assert park.get("variable_multi") == "line1\nline2\r\n%literal"
    assert park.get("missing") is None and park.get("missing", "d") == "d"
    assert "Content-Type" not in park.headers and "Content-Length" not in park.headers

    assert job.name == "BACKGROUND_JOB"
    assert job.get("Job-Command-Arg") == "1111 FOO"
    assert job.body == JOB_BODY
    assert "Content-Length" not in job.headers

    assert custom.subclass == "mod_audio_stream::json"
    assert custom.body == CUSTOM_BODY  # not url-decoded, blank lines inside kept

    assert linger.content_type == "text/disconnect-notice" and linger.body == b""
    assert linger.headers["Content-Disposition"] == "linger"
    assert disco.content_type == "text/disconnect-notice" and disco.body == DISCONNECT


def test_all_messages_in_one_read():
    p = ESLParser()
    p.receive_data(STREAM)
    check_stream(drain(p))
    assert p.next_message() is None


def test_byte_by_byte():
    p = ESLParser()
    msgs = []
    for i in range(len(STREAM)):
        p.receive_data(STREAM[i : i + 1])
        msgs.extend(drain(p))
    check_stream(msgs)


def test_split_at_every_boundary():
    for cut in range(1, len(STREAM)):
        p = ESLParser()
        p.receive_data(STREAM[:cut])
        msgs = drain(p)
        p.receive_data(STREAM[cut:])
        msgs.extend(drain(p))
        check_stream(msgs)


def test_iteration_and_events_alias():
    p = ESLParser()
    p.receive_data(AUTH_REQUEST + PARK_EVENT)
    assert [m.content_type if isinstance(m, Message) else m.name for m in p.events()] == [
        "auth/request",
        "CHANNEL_PARK",
    ]
    p.receive_data(AUTH_OK)
    assert [m.reply_text for m in p] == ["+OK accepted"]


def test_stray_blank_lines_between_messages_are_skipped():
    p = ESLParser()
    p.receive_data(b"\n\n" + AUTH_REQUEST + b"\n" + AUTH_OK)
    assert [m.content_type for m in drain(p)] == ["auth/request", "command/reply"]


def test_event_without_trailing_blank_line_and_without_inner_length():
    payload = b"Event-Name: HEARTBEAT\nUp-Time: 0%20years"
    p = ESLParser()
    p.receive_data(
        b"Content-Length: %d\nContent-Type: text/event-plain\n\n%s" % (len(payload), payload)
    )
    (ev,) = drain(p)
    assert ev.name == "HEARTBEAT" and ev.get("Up-Time") == "0 years" and ev.body == b""


def test_utf8_and_binary_safe_event_body():
    body = "héllo\x00€".encode()
    p = ESLParser()
    p.receive_data(event_plain(b"Event-Name: CUSTOM\nCaller-Caller-ID-Name: J%C3%B6rg\n", body))
    (ev,) = drain(p)
    assert ev.get("Caller-Caller-ID-Name") == "Jörg"
    assert ev.body == body


def test_other_content_types_are_plain_messages():
    p = ESLParser()
    p.receive_data(b"Content-Type: log/data\nContent-Length: 3\nLog-Level: 7\n\nabc")
    (m,) = drain(p)
    assert isinstance(m, Message) and m.content_type == "log/data" and m.body == b"abc"
    assert m.headers["Log-Level"] == "7"


def test_header_block_bound():
    p = ESLParser()
    p.receive_data(b"X: " + b"a" * MAX_HEADER_BYTES)
    with pytest.raises(ESLProtocolError):
        p.next_message()


def test_header_block_bound_when_terminated_late():
    p = ESLParser()
    p.receive_data(b"X: " + b"a" * (MAX_HEADER_BYTES + 10) + b"\n\n")
    with pytest.raises(ESLProtocolError):
        p.next_message()


def test_header_block_just_under_bound_is_fine():
    p = ESLParser()
    value = b"a" * (MAX_HEADER_BYTES - 100)
    p.receive_data(b"Content-Type: command/reply\nReply-Text: " + value + b"\n\n")
    (m,) = drain(p)
    assert m.reply_text == value.decode()


def test_body_bound():
    p = ESLParser()
    p.receive_data(b"Content-Type: api/response\nContent-Length: %d\n\n" % (MAX_BODY_BYTES + 1))
    with pytest.raises(ESLProtocolError):
        p.next_message()


@pytest.mark.parametrize("bad", [b"-1", b"abc", b"", b"1e3"])
def test_bad_content_length(bad):
    p = ESLParser()
    p.receive_data(b"Content-Type: api/response\nContent-Length: " + bad + b"\n\n")
    with pytest.raises(ESLProtocolError):
        p.next_message()


def test_inner_content_length_bounded_too():
    payload = b"Event-Name: X\nContent-Length: 99999999999\n\nabc"
    p = ESLParser()
    p.receive_data(
        b"Content-Length: %d\nContent-Type: text/event-plain\n\n%s" % (len(payload), payload)
    )
    with pytest.raises(ESLProtocolError):
        p.next_message()


def test_large_body_in_chunks():
    body = bytes(range(256)) * 4096  # 1 MiB, every byte value
    data = b"Content-Type: api/response\nContent-Length: %d\n\n" % len(body) + body + AUTH_OK
    p = ESLParser()
    msgs = []
    for i in range(0, len(data), 65536):
        p.receive_data(data[i : i + 65536])
        msgs.extend(drain(p))
    assert [m.content_type for m in msgs] == ["api/response", "command/reply"]
    assert msgs[0].body == body


# --- builders ---------------------------------------------------------------------------------


def test_builders_exact_bytes():
    assert cmd_auth("ClueCon") == b"auth ClueCon\n\n"
    assert cmd_api("show channels count") == b"api show channels count\n\n"
    assert cmd_bgapi("uuid_getvar u FOO") == b"bgapi uuid_getvar u FOO\n\n"
    assert cmd_bgapi("status", job_uuid="j-1") == b"bgapi status\nJob-UUID: j-1\n\n"
    assert (
        cmd_event_plain("CHANNEL_PARK", "CUSTOM", "a::b")
        == b"event plain CHANNEL_PARK CUSTOM a::b\n\n"
    )
    assert cmd_sendmsg(
        "u-1",
        {"call-command": "unicast", "local-port": "8025", "remote-ip": "127.0.0.1"},
    ) == (b"sendmsg u-1\ncall-command: unicast\nlocal-port: 8025\nremote-ip: 127.0.0.1\n\n")
    assert cmd_sendevent("CUSTOM", {"Event-Subclass": "x::y"}) == (
        b"sendevent CUSTOM\nEvent-Subclass: x::y\n\n"
    )
    assert cmd_exit() == b"exit\n\n"


def test_sendevent_body_framed_by_length():
    body = '{"a":"line1\nline2"}\n\nüber'
    out = cmd_sendevent("CUSTOM", {"Event-Subclass": "x::y"}, body)
    raw = body.encode()
    assert out == (
        b"sendevent CUSTOM\nEvent-Subclass: x::y\nContent-Length: %d\n\n" % len(raw) + raw
    )
    assert cmd_sendevent("CUSTOM", {}, b"\x01\x02") == (
        b"sendevent CUSTOM\nContent-Length: 2\n\n\x01\x02"
    )
    assert cmd_sendevent("CUSTOM", {}, b"") == b"sendevent CUSTOM\n\n"


@pytest.mark.parametrize("evil", ["a\nb", "a\rb", "x\r\n\r\napi uuid_kill all"])
def test_injection_refused_everywhere(evil):
    calls = [
        lambda: cmd_auth(evil),
        lambda: cmd_api(evil),
        lambda: cmd_bgapi(evil),
        lambda: cmd_bgapi("status", job_uuid=evil),
        lambda: cmd_event_plain("CHANNEL_PARK", evil),
        lambda: cmd_sendmsg(evil, {}),
        lambda: cmd_sendmsg("u", {evil: "v"}),
        lambda: cmd_sendmsg("u", {"k": evil}),
        lambda: cmd_sendevent(evil, {}),
        lambda: cmd_sendevent("CUSTOM", {evil: "v"}),
        lambda: cmd_sendevent("CUSTOM", {"k": evil}),
    ]
    for call in calls:
        with pytest.raises(CommandInjectionError):
            call()


def test_injection_error_is_value_error_and_hides_password():
    with pytest.raises(ValueError) as info:
        cmd_auth("s3cret\nx")
    assert "s3cret" not in str(info.value)


@pytest.mark.parametrize("name", ["", "a:b", " a", "Content-Length", "content-length"])
def test_bad_header_names_refused(name):
    with pytest.raises(CommandInjectionError):
        cmd_sendmsg("u", {name: "1"})
    with pytest.raises(CommandInjectionError):
        cmd_sendevent("CUSTOM", {name: "1"}, "body")


def test_event_plain_needs_a_name():
    with pytest.raises(ValueError):
        cmd_event_plain()


def test_roundtrip_builder_output_parses_as_headers():
    """A sendevent we build frames exactly like a message: headers, blank line, body."""
    out = cmd_sendevent("CUSTOM", {"Event-Subclass": "x::y", "Unique-ID": "u"}, "a\n\nb")
    first, _, rest = out.partition(b"\n")
    assert first == b"sendevent CUSTOM"
    p = ESLParser()
    p.receive_data(rest)
    (m,) = drain(p)
    assert m.headers == {"Event-Subclass": "x::y", "Unique-ID": "u", "Content-Length": "4"}
    assert m.body == b"a\n\nb"
