"""config.load_config: the TOML file, the environment and the flags, and every kind of mistake
named by its key; the example; what a reload may change."""

from __future__ import annotations

import os
import tempfile
import tomllib
from dataclasses import FrozenInstanceError, fields, replace

import pytest

from esl_audio_stream.app.config import (
    EXAMPLE,
    FLAGS,
    MASK,
    RESTART_FIELDS,
    SECTIONS,
    SETTINGS,
    ConfigError,
    DaemonConfig,
    changed_keys,
    load_config,
    reloadable,
    render,
    resolve,
)
from esl_audio_stream.app.config_layers import coerce
from esl_audio_stream.app.config_table import SECTION_KEYS
from esl_audio_stream.app.settings import PLAYBACK_MODES, StreamSettings
from esl_audio_stream.cli import _overrides, build_parser


def error(source=None, env=None, overrides=None) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load_config(source, env or {}, overrides or {})
    return info.value


def test_nothing_given_is_the_defaults():
    assert load_config() == DaemonConfig()
    assert load_config("", {}, {}) == DaemonConfig()


def test_the_example_parses_and_gives_the_defaults():
    config = load_config(EXAMPLE)
    # the two values the example sets on purpose: a placeholder password that is not ClueCon
    # and a files directory outside /tmp (FreeSWITCH must read it)
    assert config == replace(DaemonConfig(), esl_password="change-me",
                             files_dir="/var/lib/esl-audio-stream/files")
    assert set(tomllib.loads(EXAMPLE)) == {"esl", "control", "media", "playback", "streams",
                                           "stream_defaults"}


def test_the_example_s_commented_stream_defaults_are_valid():
    uncommented = EXAMPLE.replace("# STREAM_", "STREAM_")
    assert uncommented != EXAMPLE
    config = load_config(uncommented)
    assert config.stream_defaults == StreamSettings(
        buffer_ms=20, heartbeat=15.0, extra_headers=(("Authorization", "Bearer abc"),))


def test_every_key_from_the_file():
    config = load_config("""
[esl]
host = "10.0.0.5"
port = 8022
password = "s3cret"
timeout = 2
[control]
listen = "[::1]:9000"
token = "tok"
metrics_public = false
[media]
listen_host = "10.0.0.6"
freeswitch_host = "10.0.0.5"
port_min = 20000
port_max = 20010
[playback]
mode = "displace"
files_dir = "/srv/eas"
max_audio_bytes = 1000
[streams]
reconnect_buffer_seconds = 2.5
first_audio_timeout = 1
drain_timeout = 0
stop_text = "bye"
[stream_defaults]
STREAM_BUFFER_SIZE = 100
stream_no_reconnect = true
STREAM_EXTRA_HEADERS = { X-A = "1" }
""")
    assert config == DaemonConfig(
        esl_host="10.0.0.5", esl_port=8022, esl_password="s3cret", esl_timeout=2.0,
        control_host="::1", control_port=9000, control_token="tok", metrics_public=False,
        media_host="10.0.0.6", fs_media_host="10.0.0.5", fs_port_min=20000, fs_port_max=20010,
        files_dir="/srv/eas", max_audio_bytes=1000, reconnect_buffer_seconds=2.5,
        first_audio_timeout=1.0, drain_timeout=0.0, stop_text="bye",
        stream_defaults=StreamSettings(buffer_ms=100, reconnect=False, playback_mode="displace",
                                       extra_headers=(("X-A", "1"),)))
    assert isinstance(config.esl_timeout, float)


def test_environment_overrides_the_file_and_flags_override_both():
    text = '[esl]\nhost = "10.0.0.1"\nport = 8022\npassword = "file"\n' \
           '[stream_defaults]\nSTREAM_BUFFER_SIZE = 40\nSTREAM_HEART_BEAT = 5\n'
    env = {"ESL_AUDIO_STREAM_ESL_PASSWORD": "env", "ESL_AUDIO_STREAM_ESL_PORT": "8023",
           "ESL_AUDIO_STREAM_STREAM_DEFAULTS_STREAM_BUFFER_SIZE": "60",
           "ESL_AUDIO_STREAM_CONTROL_METRICS_PUBLIC": "no",
           "ESL_AUDIO_STREAM_STREAMS_STOP_TEXT": "bye now",
           "ESL_AUDIO_STREAM_PROFILE": "/tmp/p",  # not a setting: left alone
           "HOME": "/root"}
    config = load_config(text, env, {"esl.password": "flag", "esl.host": "127.0.0.2"})
    assert (config.esl_host, config.esl_port, config.esl_password) == ("127.0.0.2", 8023, "flag")
    assert config.stream_defaults.buffer_ms == 60 and config.stream_defaults.heartbeat == 5.0
    assert config.metrics_public is False and config.stop_text == "bye now"
    flag = load_config(text, env, {"stream_defaults.STREAM_BUFFER_SIZE": "80"})
    assert flag.stream_defaults.buffer_ms == 80


def test_the_playback_mode_from_playback_or_a_stream_default():
    assert load_config('[playback]\nmode = "displace"').stream_defaults.playback_mode == "displace"
    # the old flag keeps working and overrides the file
    over = load_config('[playback]\nmode = "inject"', {},
                       {"stream_defaults.STREAM_PLAYBACK_MODE": "displace"})
    assert over.stream_defaults.playback_mode == "displace"
    env = load_config("", {"ESL_AUDIO_STREAM_PLAYBACK_MODE": "DISPLACE"})
    assert env.stream_defaults.playback_mode == "displace"
    both = error('[playback]\nmode = "inject"\n[stream_defaults]\nSTREAM_PLAYBACK_MODE = "x"')
    assert both.key == "stream_defaults.STREAM_PLAYBACK_MODE"
    for mode in PLAYBACK_MODES:  # inject, displace (and broadcast once settings.py has it)
        assert load_config(f'[playback]\nmode = "{mode}"').stream_defaults.playback_mode == mode


BAD_FILES = [
    # (file, key named, words in the problem)
    ('[esl]\npasword = "x"', "esl.pasword", "unknown key"),
    ('[eslx]\nhost = "x"', "[eslx]", "unknown section"),
    ('esl = 5', "esl", "expected a [esl] table"),
    ('[esl]\nport = "8021"', "esl.port", "expected an integer, got a string"),
    ('[esl]\nport = 8021.0', "esl.port", "expected an integer, got a number"),
    ('[esl]\nport = true', "esl.port", "expected an integer, got a boolean"),
    ('[esl]\nport = 0', "esl.port", "between 1 and 65535"),
    ('[esl]\nport = 65536', "esl.port", "between 1 and 65535"),
    ('[esl]\nhost = ""', "esl.host", "must not be empty"),
    ('[esl]\ntimeout = 0', "esl.timeout", "must be above 0"),
    ('[esl]\ntimeout = nan', "esl.timeout", "finite"),
    ('[esl]\ntimeout = "5"', "esl.timeout", "expected a number"),
    ('[esl]\npassword = 1234', "esl.password", "expected a string, got an integer"),
    ('[control]\nlisten = "127.0.0.1:http"', "control.listen", "HOST:PORT"),
    ('[control]\nlisten = "127.0.0.1:99999"', "control.listen", "0 to 65535"),
    ('[control]\nlisten = "0.0.0.0:8089"', "control.token", "required"),
    ('[control]\nlisten = "[::]:8089"', "control.token", "not a loopback address"),
    ('[control]\nlisten = "example.com:8089"', "control.token", "required"),
    ('[control]\nmetrics_public = "yes"', "control.metrics_public", "expected a boolean"),
    ('[media]\nlisten_host = "::1"', "media.listen_host", "IPv4"),
    ('[media]\nfreeswitch_host = "fs.local"', "media.freeswitch_host", "IPv4"),
    ('[media]\nport_min = 16000\nport_max = 12000', "media.port_min", "above media.port_max"),
    ('[media]\nport_max = 70000', "media.port_max", "between 1 and 65535"),
    ('[playback]\nmode = "loud"', "playback.mode", "is not one of"),
    ('[playback]\nmode = 1', "playback.mode", "expected a string"),
    ('[playback]\nfiles_dir = ""', "playback.files_dir", "must not be empty"),
    ('[playback]\nmax_audio_bytes = 0', "playback.max_audio_bytes", "between 1"),
    ('[streams]\nreconnect_buffer_seconds = 0', "streams.reconnect_buffer_seconds", "above 0"),
    ('[streams]\nreconnect_buffer_seconds = 601', "streams.reconnect_buffer_seconds",
     "at most 600"),
    ('[streams]\ndrain_timeout = -1', "streams.drain_timeout", "between 0 and 3600"),
    ('[streams]\nfirst_audio_timeout = 0', "streams.first_audio_timeout", "above 0"),
    ('[streams]\nstop_text = ["a"]', "streams.stop_text", "expected a string, got an array"),
    ('[stream_defaults]\nSTREAM_NOPE = 1', "stream_defaults.STREAM_NOPE", "unknown channel"),
    ('[stream_defaults]\nSTREAM_BUFFER_SIZE = 30', "stream_defaults.STREAM_BUFFER_SIZE",
     "not a multiple of 20"),
    ('[stream_defaults]\nSTREAM_HEART_BEAT = -1', "stream_defaults.STREAM_HEART_BEAT",
     "must not be negative"),
    ('[stream_defaults]\nSTREAM_EXTRA_HEADERS = "{"', "stream_defaults.STREAM_EXTRA_HEADERS",
     "not valid JSON"),
    ('[stream_defaults]\nSTREAM_EXTRA_HEADERS = { Host = "x" }',
     "stream_defaults.STREAM_EXTRA_HEADERS", "set by the WebSocket handshake"),
    ('[stream_defaults]\nSTREAM_TLS_KEY_FILE = "/k"', "stream_defaults", "give both"),
    ('[stream_defaults]\nSTREAM_BUFFER_SIZE = [20]', "stream_defaults.STREAM_BUFFER_SIZE",
     "got an array"),
    ("[esl\n", "file", "not valid TOML"),
    ('[esl]\nport = 1\nport = 2', "file", "not valid TOML"),
]


@pytest.mark.parametrize(("text", "key", "words"), BAD_FILES)
def test_a_bad_file_names_the_key_and_the_problem(text, key, words):
    exc = error(text)
    assert exc.key == key
    assert words in exc.problem
    assert str(exc) == f"{key}: {exc.problem}" and "\n" not in str(exc)


@pytest.mark.parametrize(("env", "key", "words"), [
    ({"ESL_AUDIO_STREAM_ESL_PORT": "80x"}, "ESL_AUDIO_STREAM_ESL_PORT", "expected an integer"),
    ({"ESL_AUDIO_STREAM_ESL_PASWORD": "x"}, "ESL_AUDIO_STREAM_ESL_PASWORD", "unknown key"),
    ({"ESL_AUDIO_STREAM_CONTROL_METRICS_PUBLIC": "maybe"},
     "ESL_AUDIO_STREAM_CONTROL_METRICS_PUBLIC", "expected a boolean"),
    ({"ESL_AUDIO_STREAM_STREAMS_DRAIN_TIMEOUT": "inf"}, "ESL_AUDIO_STREAM_STREAMS_DRAIN_TIMEOUT",
     "finite"),
    ({"ESL_AUDIO_STREAM_STREAM_DEFAULTS_STREAM_X": "1"},
     "ESL_AUDIO_STREAM_STREAM_DEFAULTS_STREAM_X", "unknown channel"),
    ({"ESL_AUDIO_STREAM_STREAM_DEFAULTS_STREAM_BUFFER_SIZE": "7"},
     "ESL_AUDIO_STREAM_STREAM_DEFAULTS_STREAM_BUFFER_SIZE", "not a multiple"),
    ({"ESL_AUDIO_STREAM_MEDIA_PORT_MIN": "15000", "ESL_AUDIO_STREAM_MEDIA_PORT_MAX": "14000"},
     "ESL_AUDIO_STREAM_MEDIA_PORT_MIN", "above media.port_max"),
    ({"ESL_AUDIO_STREAM_CONTROL_LISTEN": "0.0.0.0:1"}, "control.token", "required"),
    ({"ESL_AUDIO_STREAM_PLAYBACK_FILES_GROUP": "no-such-group-here"},
     "ESL_AUDIO_STREAM_PLAYBACK_FILES_GROUP", "no such group"),
])
def test_a_bad_environment_variable_is_named(env, key, words):
    exc = error("", env)
    assert exc.key == key and words in exc.problem


def test_bad_flags_are_named():
    exc = error("", {}, {"esl.port": "x"})
    assert exc.key == "esl.port (command line)" and "expected an integer" in exc.problem
    exc = error("", {}, {"stream_defaults.STREAM_PLAYBACK_MODE": "loud"})
    assert exc.key == "stream_defaults.STREAM_PLAYBACK_MODE (command line)"
    assert error("", {}, {"nope.x": "1"}).key == "nope.x"


def test_a_token_allows_any_control_address_and_loopback_needs_none():
    config = load_config('[control]\nlisten = "0.0.0.0:8089"\ntoken = "t"')
    assert (config.control_host, config.control_token) == ("0.0.0.0", "t")
    for listen in ("127.0.0.1:1", "127.9.9.9:1", "localhost:1", "[::1]:1"):
        assert load_config(f'[control]\nlisten = "{listen}"').control_token is None
    assert load_config('[control]\nlisten = "127.0.0.1"').control_port == 8089


def test_secrets_are_never_in_an_error_or_the_rendering():
    for text in ('[esl]\npassword = 99999', '[control]\ntoken = 99999'):
        assert "99999" not in str(error(text))
    resolved = resolve('[esl]\npassword = "hunter2"\n[control]\ntoken = "tok-tok"')
    shown = render(resolved)
    assert "hunter2" not in shown and "tok-tok" not in shown and shown.count(MASK) == 2
    assert tomllib.loads(shown)["esl"]["password"] == MASK


def test_the_rendering_is_toml_of_the_effective_values_with_their_origin():
    resolved = resolve('[esl]\nport = 8022\n[stream_defaults]\nSTREAM_EXTRA_HEADERS = '
                       '{ "X-A" = "a\\"b" }', {"ESL_AUDIO_STREAM_ESL_HOST": "10.1.1.1"})
    shown = render(resolved)
    parsed = tomllib.loads(shown)
    assert parsed["esl"]["port"] == 8022 and parsed["esl"]["host"] == "10.1.1.1"
    assert parsed["stream_defaults"]["STREAM_EXTRA_HEADERS"] == '{"X-A": "a\\"b"}'
    assert "port = 8022  # file" in shown
    assert 'host = "10.1.1.1"  # ESL_AUDIO_STREAM_ESL_HOST' in shown
    assert "timeout = 5.0  # default" in shown
    # what it prints loads back to the same configuration (secrets aside)
    again = load_config(shown.replace(f'"{MASK}"', '"ClueCon"'))
    assert again == load_config(
        '[esl]\nport = 8022\n[stream_defaults]\nSTREAM_EXTRA_HEADERS = { "X-A" = "a\\"b" }',
        {"ESL_AUDIO_STREAM_ESL_HOST": "10.1.1.1"})


def test_a_reload_keeps_what_needs_a_restart():
    old = load_config(EXAMPLE)
    new = load_config(EXAMPLE.replace("port = 8021", "port = 8022")
                      .replace('listen = "127.0.0.1:8089"', 'listen = "127.0.0.1:8090"')
                      .replace("drain_timeout = 10.0", "drain_timeout = 3.0")
                      .replace('mode = "inject"', 'mode = "displace"')
                      .replace("# STREAM_BUFFER_SIZE = 20", "STREAM_BUFFER_SIZE = 100"))
    kept, restart = reloadable(old, new)
    assert restart == ["esl.port", "control.listen"]
    assert (kept.esl_port, kept.control_port) == (8021, 8089)
    assert kept.drain_timeout == 3.0
    assert kept.stream_defaults.buffer_ms == 100
    assert kept.stream_defaults.playback_mode == "displace"
    same, nothing = reloadable(old, old)
    assert same == old and nothing == []


def test_files_group_reaches_the_config():
    assert load_config('[playback]\nfiles_group = "0"\n', env={}).files_group == "0"
    assert load_config("", env={}).files_group is None


# -- the table (config_table.SETTINGS) that all of the above is made from -----------------------

#: DaemonConfig's fields and defaults as the code base reads them (config.esl_host, ...): a new
#: key adds a field, none of these may go or change.
FIELD_DEFAULTS = {
    "esl_host": "127.0.0.1", "esl_port": 8021, "esl_password": "ClueCon", "esl_timeout": 5.0,
    "control_host": "127.0.0.1", "control_port": 8089, "control_token": None,
    "metrics_public": True, "drain_timeout": 10.0, "stop_text": None, "media_host": "127.0.0.1",
    "fs_media_host": "127.0.0.1", "fs_port_min": 12000, "fs_port_max": 15999,
    "ws_connect_timeout": 5.0, "ws_close_timeout": 2.0, "first_audio_timeout": 3.0,
    "reconnect_buffer_seconds": 10.0,
    "files_dir": os.path.join(tempfile.gettempdir(), "esl-audio-stream"),
    "max_audio_bytes": 8 << 20, "files_group": None, "destroy_wait": 2.0,
    "stream_defaults": StreamSettings(),
}
FILE_KEYS = [s for s in SETTINGS if s.key is not None]


def test_daemon_config_is_a_frozen_slots_dataclass_of_the_same_fields_and_defaults():
    config = DaemonConfig()
    have = {f.name: getattr(config, f.name) for f in fields(config)}
    assert {name: have.get(name) for name in FIELD_DEFAULTS} == FIELD_DEFAULTS
    assert DaemonConfig.__slots__ and not hasattr(config, "__dict__")
    with pytest.raises(FrozenInstanceError):
        config.esl_port = 1  # type: ignore[misc]
    assert DaemonConfig.__module__ == "esl_audio_stream.app.config"


def test_each_field_is_set_by_one_entry_and_each_default_passes_its_own_check():
    named = [f for s in SETTINGS for f in s.fields]
    assert named == [f.name for f in fields(DaemonConfig)] and len(named) == len(set(named))
    assert len({s.key for s in FILE_KEYS}) == len(FILE_KEYS)
    for s in FILE_KEYS:
        assert s.type in (str, int, float, bool) and s.key.count(".") == 1
        assert coerce(s.key, s, s.default_value(), False) == s.default_value()
        if s.example is not None:
            assert coerce(s.key, s, s.example, False) == s.example
    assert set(SECTIONS) == {s.section for s in FILE_KEYS} | {"stream_defaults"}


def test_the_example_has_each_key_in_the_table_s_order_with_its_default_or_example_value():
    parsed = tomllib.loads(EXAMPLE)
    for section, keys in SECTION_KEYS.items():
        assert tuple(parsed[section]) == keys
    for s in FILE_KEYS:
        shown = s.default_value() if s.example is None else s.example
        assert parsed[s.section][s.name] == shown


def test_each_key_s_environment_variable_is_named_from_the_table():
    assert [s.env for s in FILE_KEYS][:3] == [
        "ESL_AUDIO_STREAM_ESL_HOST", "ESL_AUDIO_STREAM_ESL_PORT", "ESL_AUDIO_STREAM_ESL_PASSWORD"]
    for s in FILE_KEYS:
        value = s.default_value()
        text = str(value).lower() if isinstance(value, bool) else str(value)
        resolved = resolve("", {s.env: text})
        assert resolved[s.section][s.name] == (value, s.env)


def test_the_reload_rule_and_the_logged_key_of_each_field_come_from_the_table():
    assert set(RESTART_FIELDS) == {
        "esl_host", "esl_port", "esl_password", "esl_timeout", "control_host", "control_port",
        "control_token", "metrics_public", "fs_port_min", "fs_port_max", "owner"}
    base = DaemonConfig()
    for s in SETTINGS:
        for name in s.fields:
            value = getattr(base, name)
            other = (not value if isinstance(value, bool) else value + 1
                     if isinstance(value, int | float) else replace(value, buffer_ms=40)
                     if isinstance(value, StreamSettings) else (value or "") + "x")
            changed = replace(base, **{name: other})
            named = s.key or name
            if name == "stream_defaults":
                named = "stream_defaults (or playback.mode)"
            assert changed_keys(base, changed) == [named]
            kept, restart = reloadable(base, changed)
            assert restart == ([named] if s.restart else [])
            assert getattr(kept, name) == (value if s.restart else other)


def test_the_table_s_flags_are_run_options_giving_their_key():
    assert FLAGS == {"--esl-password": "esl.password", "--control": "control.listen"}
    for flag, key in FLAGS.items():
        ns = build_parser().parse_args(["run", flag, "x:1"])
        assert _overrides(ns) == {key: "x:1"}
    ns = build_parser().parse_args(["run", "--esl", "10.0.0.1:8022", "--control", "[::1]:1",
                                    "--stream-default", "STREAM_BUFFER_SIZE=40"])
    assert _overrides(ns) == {"esl.host": "10.0.0.1", "esl.port": "8022",
                              "control.listen": "[::1]:1",
                              "stream_defaults.STREAM_BUFFER_SIZE": "40"}
