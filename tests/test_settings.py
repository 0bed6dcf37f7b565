"""STREAM_* channel variables -> StreamSettings: every variable's good and bad values, defaults,
daemon-wide defaults overridden by the channel, empty = unset, and the dump/event helpers."""

from __future__ import annotations

import json

import pytest

from esl_audio_stream.app.settings import (
    VARIABLES,
    SettingsError,
    StreamSettings,
    defaults_from_mapping,
    parse_bool,
    parse_extra_headers,
    settings_from_variables,
    variables_from_dump,
)


class Warnings(list[str]):
    def __call__(self, message: str) -> None:
        self.append(message)


DEFAULTS = StreamSettings()


def parse(variables: dict[str, str], defaults: StreamSettings = DEFAULTS) -> StreamSettings:
    """Parse, and insist that nothing was warned."""
    warned = Warnings()
    result = settings_from_variables(variables, defaults, warned)
    assert warned == []
    return result


def parse_warned(variables: dict[str, str]) -> tuple[StreamSettings, list[str]]:
    warned = Warnings()
    return settings_from_variables(variables, warn=warned), warned


def error(variables: dict[str, str]) -> str:
    with pytest.raises(SettingsError) as info:
        settings_from_variables(variables, warn=Warnings())
    message = str(info.value)
    assert "\n" not in message and "\r" not in message  # it goes into a one-line -ERR answer
    return message


# --------------------------------------------------------------------------- general


def test_defaults_match_mod_audio_stream() -> None:
    s = parse({})
    assert s == StreamSettings()
    assert (s.deflate, s.heartbeat, s.suppress_log, s.buffer_ms) == (True, None, False, 20)
    assert (s.extra_headers, s.reconnect) == ((), True)
    assert (s.tls_ca, s.tls_cert, s.tls_key, s.tls_check_hostname) == ("SYSTEM", None, None, True)


def test_variables_in_readme_order() -> None:
    assert VARIABLES == (
        "STREAM_MESSAGE_DEFLATE", "STREAM_HEART_BEAT", "STREAM_SUPPRESS_LOG",
        "STREAM_BUFFER_SIZE", "STREAM_EXTRA_HEADERS", "STREAM_NO_RECONNECT",
        "STREAM_TLS_CA_FILE", "STREAM_TLS_KEY_FILE", "STREAM_TLS_CERT_FILE",
        "STREAM_TLS_DISABLE_HOSTNAME_VALIDATION", "STREAM_PLAYBACK_MODE", "STREAM_SOURCE",
    )


def test_source() -> None:
    assert parse({}).source == "auto"
    assert parse({"STREAM_SOURCE": " Taps "}).source == "taps"
    assert parse({"STREAM_SOURCE": "direct"}).source == "direct"
    with pytest.raises(SettingsError, match="STREAM_SOURCE"):
        parse({"STREAM_SOURCE": "both"})


def test_playback_mode() -> None:
    assert parse({"STREAM_PLAYBACK_MODE": "Displace"}).playback_mode == "displace"
    assert parse({}).playback_mode == "inject"
    assert parse({"STREAM_PLAYBACK_MODE": " broadcast"}).playback_mode == "broadcast"
    with pytest.raises(SettingsError, match="STREAM_PLAYBACK_MODE"):
        parse({"STREAM_PLAYBACK_MODE": "both"})


def test_settings_are_frozen() -> None:
    with pytest.raises(AttributeError):
        StreamSettings().buffer_ms = 40  # type: ignore[misc]


def test_empty_string_is_unset_for_every_variable() -> None:
    daemon = StreamSettings(deflate=False, heartbeat=5.0, suppress_log=True, buffer_ms=100,
                            extra_headers=(("X-A", "1"),), reconnect=False, tls_ca="NONE",
                            tls_cert="/c.pem", tls_key="/k.pem", tls_check_hostname=False)
    assert parse(dict.fromkeys(VARIABLES, ""), daemon) == daemon
    assert parse(dict.fromkeys(VARIABLES, "")) == StreamSettings()


def test_unrelated_and_lower_case_names() -> None:
    # FreeSWITCH looks channel variables up case-insensitively.
    assert parse({"stream_buffer_size": "40", "STREAM_OTHER": "x", "foo": "bar"}).buffer_ms == 40


# --------------------------------------------------------------------------- booleans


@pytest.mark.parametrize(
    "text", ["true", "TRUE", "True", "1", "yes", "on", "t", "enabled", "active", "allow", "ALLOW",
             "2", "-1", "+3", "1.5", "10"],
)
def test_parse_bool_true(text: str) -> None:
    assert parse_bool(text) is True


@pytest.mark.parametrize(
    "text", ["false", "0", "no", "off", "f", "disabled", "", "0.9", ".5", "-", " true", "true ",
             "tru", "y", "1x", "maybe"],
)
def test_parse_bool_false(text: str) -> None:
    # switch_true: exact words (no trimming), or a number whose integer part is non-zero.
    assert parse_bool(text) is False


BOOLS = {
    # variable: (field, value the field takes when the variable is true)
    "STREAM_MESSAGE_DEFLATE": ("deflate", False),  # inverted: true DISABLES deflate
    "STREAM_SUPPRESS_LOG": ("suppress_log", True),
    "STREAM_NO_RECONNECT": ("reconnect", False),
    "STREAM_TLS_DISABLE_HOSTNAME_VALIDATION": ("tls_check_hostname", False),
}


@pytest.mark.parametrize("name", list(BOOLS))
def test_boolean_variables(name: str) -> None:
    field, when_true = BOOLS[name]
    for text in ("true", "1", "yes", "On"):
        assert getattr(parse({name: text}), field) is when_true
    for text in ("false", "0", "no", "off"):
        assert getattr(parse({name: text}), field) is (not when_true)


@pytest.mark.parametrize("name", list(BOOLS))
def test_boolean_variables_override_daemon_default(name: str) -> None:
    field, when_true = BOOLS[name]
    daemon = defaults_from_mapping({name: "true"})
    assert getattr(daemon, field) is when_true
    assert getattr(parse({}, daemon), field) is when_true  # unset: the daemon's value
    assert getattr(parse({name: ""}, daemon), field) is when_true  # empty: unset
    assert getattr(parse({name: "false"}, daemon), field) is (not when_true)  # channel wins


@pytest.mark.parametrize("name", list(BOOLS))
def test_boolean_garbage_is_false_with_a_warning(name: str) -> None:
    field, when_true = BOOLS[name]
    s, warned = parse_warned({name: "sure"})
    assert getattr(s, field) is (not when_true)  # FreeSWITCH's switch_true("sure") is false
    assert len(warned) == 1 and warned[0].startswith(f"{name}: 'sure' is not a boolean")


# --------------------------------------------------------------------------- heartbeat


@pytest.mark.parametrize(
    ("text", "expected"),
    [("1", 1.0), ("30", 30.0), (" 15 ", 15.0), ("2.5", 2.5), (".5", 0.5), ("+4", 4.0),
     ("0", None), ("0.0", None), ("86400", 86400.0)],
)
def test_heartbeat_good(text: str, expected: float | None) -> None:
    assert parse({"STREAM_HEART_BEAT": text}).heartbeat == expected


@pytest.mark.parametrize(
    ("text", "problem"),
    [("abc", "expected a number of seconds, got 'abc'"),
     ("5s", "expected a number of seconds, got '5s'"),
     ("1e3", "expected a number of seconds"),
     ("nan", "expected a number of seconds"),
     ("inf", "expected a number of seconds"),
     ("1_0", "expected a number of seconds"),
     ("-1", "must not be negative, got '-1'"),
     ("-0.5", "must not be negative"),
     ("86401", "at most 86400 seconds")],
)
def test_heartbeat_bad(text: str, problem: str) -> None:
    message = error({"STREAM_HEART_BEAT": text})
    assert message.startswith("STREAM_HEART_BEAT: ")
    assert problem in message


def test_heartbeat_overrides_daemon_default() -> None:
    daemon = defaults_from_mapping({"STREAM_HEART_BEAT": "10"})
    assert daemon.heartbeat == 10.0
    assert parse({}, daemon).heartbeat == 10.0
    assert parse({"STREAM_HEART_BEAT": "3"}, daemon).heartbeat == 3.0
    assert parse({"STREAM_HEART_BEAT": "0"}, daemon).heartbeat is None  # 0 turns it off


# --------------------------------------------------------------------------- buffer size


@pytest.mark.parametrize(("text", "ms"), [("20", 20), ("40", 40), ("60", 60), ("100", 100),
                                          (" 200 ", 200), ("10000", 10000)])
def test_buffer_size_good(text: str, ms: int) -> None:
    assert parse({"STREAM_BUFFER_SIZE": text}).buffer_ms == ms


@pytest.mark.parametrize("text", ["30", "0", "-20", "abc", "10", "25", "40ms", "40.0", "10020"])
def test_buffer_size_bad_warns_and_uses_20(text: str) -> None:
    s, warned = parse_warned({"STREAM_BUFFER_SIZE": text})
    assert s.buffer_ms == 20
    assert len(warned) == 1
    assert warned[0].startswith(f"STREAM_BUFFER_SIZE: {text!r} is not a multiple of 20 ms")
    assert warned[0].endswith("; using 20 ms")


def test_buffer_size_bad_channel_value_falls_back_to_20_not_the_daemon_default() -> None:
    # mod_audio_stream: a bad value means 20 ms. The daemon default only applies when unset.
    daemon = defaults_from_mapping({"STREAM_BUFFER_SIZE": "100"})
    assert parse({}, daemon).buffer_ms == 100
    assert parse({"STREAM_BUFFER_SIZE": "60"}, daemon).buffer_ms == 60
    assert settings_from_variables({"STREAM_BUFFER_SIZE": "30"}, daemon, Warnings()).buffer_ms == 20


def test_buffer_size_warns_through_logging_by_default(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("WARNING", logger="esl_audio_stream.app.settings"):
        assert settings_from_variables({"STREAM_BUFFER_SIZE": "30"}).buffer_ms == 20
    assert "STREAM_BUFFER_SIZE: '30' is not a multiple of 20 ms" in caplog.text


# --------------------------------------------------------------------------- extra headers


def test_extra_headers_good() -> None:
    s = parse({"STREAM_EXTRA_HEADERS": '{"Authorization": "Bearer abc", "X-Call": "42"}'})
    assert s.extra_headers == (("Authorization", "Bearer abc"), ("X-Call", "42"))
    assert parse({"STREAM_EXTRA_HEADERS": "{}"}).extra_headers == ()
    spaced = parse({"STREAM_EXTRA_HEADERS": '{"X-A": "  a\\tb  ", "X-Empty": ""}'})
    assert spaced.extra_headers == (("X-A", "a\tb"), ("X-Empty", ""))


def test_extra_headers_keep_order() -> None:
    names = [f"X-H{i}" for i in range(20)]
    text = json.dumps({n: n.lower() for n in reversed(names)})
    assert [n for n, _ in parse_extra_headers(text)] == list(reversed(names))


@pytest.mark.parametrize(
    ("text", "problem"),
    [("{", "not valid JSON"),
     ("not json", "not valid JSON (Expecting value: line 1 column 1 (char 0))"),
     ('["X-A", "1"]', "expected a JSON object of header names to string values, got an array"),
     ('"X-A: 1"', "got a string"),
     ("42", "got a number"),
     ("null", "got null"),
     ('{"X-A": 1}', "the value of X-A must be a JSON string, got a number"),
     ('{"X-A": true}', "the value of X-A must be a JSON string, got a boolean"),
     ('{"X-A": null}', "the value of X-A must be a JSON string, got null"),
     ('{"X-A": {"b": "c"}}', "the value of X-A must be a JSON string, got an object"),
     ('{"X-A": ["b"]}', "the value of X-A must be a JSON string, got an array"),
     ('{"X-A": "a\\r\\nX-Evil: 1"}', "the value of X-A contains CR or LF"),
     ('{"X-A": "a\\nb"}', "the value of X-A contains CR or LF"),
     ('{"X-A\\r\\nX-Evil": "1"}', "contains CR or LF"),
     ('{"X A": "1"}', "'X A' is not a valid HTTP header name"),
     ('{"": "1"}', "'' is not a valid HTTP header name"),
     ('{"X:A": "1"}', "is not a valid HTTP header name"),
     ('{"X-A": "caf\\u00e9"}', "the value of X-A must be printable ASCII"),
     ('{"X-A": "a\\u0000b"}', "the value of X-A must be printable ASCII"),
     ('{"X-A": "1", "x-a": "2"}', "header x-a is given more than once"),
     ('{"Host": "evil"}', "Host is set by the WebSocket handshake"),
     ('{"sec-websocket-key": "x"}', "sec-websocket-key is set by the WebSocket handshake"),
     ('{"Connection": "close"}', "Connection is set by the WebSocket handshake")],
)
def test_extra_headers_bad(text: str, problem: str) -> None:
    message = error({"STREAM_EXTRA_HEADERS": text})
    assert message.startswith("STREAM_EXTRA_HEADERS: ")
    assert problem in message


def test_extra_headers_deeply_nested_json() -> None:
    message = error({"STREAM_EXTRA_HEADERS": "[" * 100_000 + "]" * 100_000})
    assert message == "STREAM_EXTRA_HEADERS: not valid JSON (nested too deeply)"


def test_extra_headers_override_daemon_default() -> None:
    daemon = defaults_from_mapping({"STREAM_EXTRA_HEADERS": '{"X-Daemon": "d"}'})
    assert parse({}, daemon).extra_headers == (("X-Daemon", "d"),)
    # The channel's object replaces the daemon's (it is one value, as in mod_audio_stream).
    assert parse({"STREAM_EXTRA_HEADERS": '{"X-Chan": "c"}'}, daemon).extra_headers == (
        ("X-Chan", "c"),
    )


def test_extra_headers_are_accepted_by_the_websocket_handshake() -> None:
    """What passes validation, wsproto (h11) sends as-is."""
    from wsproto import ConnectionType, WSConnection
    from wsproto.events import Request

    headers = parse_extra_headers('{"Authorization": "Bearer a.b-c", "X-Odd": "!#$%&\'*+ ~|", '
                                  '"X-Tab": "a\\tb", "X-Empty": ""}')
    wire = WSConnection(ConnectionType.CLIENT).send(
        Request(host="h", target="/", extra_headers=list(headers))
    )
    assert b"\r\nAuthorization: Bearer a.b-c\r\n" in wire
    assert b"\r\nX-Odd: !#$%&'*+ ~|\r\n" in wire
    assert b"\r\nX-Tab: a\tb\r\n" in wire


# --------------------------------------------------------------------------- TLS variables


def test_tls_ca_values() -> None:
    assert parse({"STREAM_TLS_CA_FILE": "SYSTEM"}).tls_ca == "SYSTEM"
    assert parse({"STREAM_TLS_CA_FILE": "NONE"}).tls_ca == "NONE"
    assert parse({"STREAM_TLS_CA_FILE": "/etc/ssl/my-ca.pem"}).tls_ca == "/etc/ssl/my-ca.pem"
    daemon = defaults_from_mapping({"STREAM_TLS_CA_FILE": "/etc/daemon-ca.pem"})
    assert parse({}, daemon).tls_ca == "/etc/daemon-ca.pem"
    assert parse({"STREAM_TLS_CA_FILE": "SYSTEM"}, daemon).tls_ca == "SYSTEM"


def test_tls_path_with_nul_refused() -> None:
    assert error({"STREAM_TLS_CA_FILE": "/a\x00b"}) == (
        "STREAM_TLS_CA_FILE: the path contains a NUL byte"
    )


def test_client_cert_and_key_together() -> None:
    s = parse({"STREAM_TLS_CERT_FILE": "/c.pem", "STREAM_TLS_KEY_FILE": "/k.pem"})
    assert (s.tls_cert, s.tls_key) == ("/c.pem", "/k.pem")


def test_client_cert_without_key_and_key_without_cert() -> None:
    assert error({"STREAM_TLS_CERT_FILE": "/c.pem"}) == (
        "STREAM_TLS_CERT_FILE is set but STREAM_TLS_KEY_FILE is not: give both or neither"
    )
    assert error({"STREAM_TLS_KEY_FILE": "/k.pem"}) == (
        "STREAM_TLS_KEY_FILE is set but STREAM_TLS_CERT_FILE is not: give both or neither"
    )
    with pytest.raises(SettingsError, match="give both or neither"):
        defaults_from_mapping({"STREAM_TLS_CERT_FILE": "/c.pem"})


def test_client_cert_pair_replaces_the_daemon_pair() -> None:
    daemon = defaults_from_mapping(
        {"STREAM_TLS_CERT_FILE": "/d.pem", "STREAM_TLS_KEY_FILE": "/d.key"}
    )
    assert (parse({}, daemon).tls_cert, parse({}, daemon).tls_key) == ("/d.pem", "/d.key")
    chan = parse({"STREAM_TLS_CERT_FILE": "/c.pem", "STREAM_TLS_KEY_FILE": "/c.key"}, daemon)
    assert (chan.tls_cert, chan.tls_key) == ("/c.pem", "/c.key")
    # A channel giving only its certificate must not be paired with the daemon's key.
    with pytest.raises(SettingsError, match="STREAM_TLS_KEY_FILE is not"):
        settings_from_variables({"STREAM_TLS_CERT_FILE": "/c.pem"}, daemon, Warnings())


# --------------------------------------------------------------------------- daemon defaults


def test_defaults_from_mapping_all_variables() -> None:
    d = defaults_from_mapping({
        "STREAM_MESSAGE_DEFLATE": "true", "STREAM_HEART_BEAT": "20", "STREAM_SUPPRESS_LOG": "1",
        "STREAM_BUFFER_SIZE": "60", "STREAM_EXTRA_HEADERS": '{"X-A": "b"}',
        "STREAM_NO_RECONNECT": "yes", "STREAM_TLS_CA_FILE": "NONE",
        "STREAM_TLS_KEY_FILE": "/k", "STREAM_TLS_CERT_FILE": "/c",
        "STREAM_TLS_DISABLE_HOSTNAME_VALIDATION": "on",
    })
    assert d == StreamSettings(deflate=False, heartbeat=20.0, suppress_log=True, buffer_ms=60,
                               extra_headers=(("X-A", "b"),), reconnect=False, tls_ca="NONE",
                               tls_cert="/c", tls_key="/k", tls_check_hostname=False)
    assert defaults_from_mapping({}) == StreamSettings()


def test_defaults_from_mapping_is_strict() -> None:
    with pytest.raises(SettingsError, match=r"^STREAM_HEARTBEAT: unknown setting \(known: "):
        defaults_from_mapping({"STREAM_HEARTBEAT": "5"})
    with pytest.raises(SettingsError) as info:
        defaults_from_mapping({"STREAM_BUFFER_SIZE": "30"})  # a channel would only get a warning
    assert str(info.value) == (
        "STREAM_BUFFER_SIZE: '30' is not a multiple of 20 ms between 20 and 10000"
    )
    with pytest.raises(SettingsError, match=r"^STREAM_HEART_BEAT: "):
        defaults_from_mapping({"STREAM_HEART_BEAT": "soon"})
    with pytest.raises(SettingsError, match=r"^STREAM_EXTRA_HEADERS: not valid JSON"):
        defaults_from_mapping({"STREAM_EXTRA_HEADERS": "{"})


def test_defaults_apply_variable_by_variable() -> None:
    daemon = defaults_from_mapping({"STREAM_BUFFER_SIZE": "100", "STREAM_NO_RECONNECT": "true"})
    s = parse({"STREAM_SUPPRESS_LOG": "true"}, daemon)
    assert (s.buffer_ms, s.reconnect, s.suppress_log) == (100, False, True)


# --------------------------------------------------------------------------- dumps and events


def test_variables_from_dump() -> None:
    dump = {
        "Unique-ID": "abc",
        "Channel-Name": "loopback/1000-a",
        "variable_STREAM_BUFFER_SIZE": "100",
        "variable_STREAM_EXTRA_HEADERS": '{"X-A":"yes"}',
        "variable_stream_suppress_log": "true",  # FreeSWITCH: names are case-insensitive
        "variable_STREAM_UNKNOWN": "x",
        "variable_other": "y",
        "STREAM_HEART_BEAT": "5",  # not a channel variable header
    }
    assert variables_from_dump(dump) == {
        "STREAM_BUFFER_SIZE": "100",
        "STREAM_EXTRA_HEADERS": '{"X-A":"yes"}',
        "STREAM_SUPPRESS_LOG": "true",
    }
    s = parse(variables_from_dump(dump))
    assert (s.buffer_ms, s.extra_headers, s.suppress_log) == (100, (("X-A", "yes"),), True)


def test_variables_from_dump_empty() -> None:
    assert variables_from_dump({}) == {}
    assert variables_from_dump({"Event-Name": "CHANNEL_PARK"}) == {}
