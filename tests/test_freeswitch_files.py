"""freeswitch/: every XML file parses, and says what the daemon depends on -- the event socket on
loopback with the example configuration's password (not ClueCon), the modules, and dialplan
variables and event subclasses named as intake.py reads them."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from esl_audio_stream.app import commands, intake
from esl_audio_stream.app.config import EXAMPLE, DaemonConfig, is_loopback, load_config
from esl_audio_stream.app.settings import VARIABLES, settings_from_variables
from esl_audio_stream.esl.protocol import Event

FREESWITCH = Path(__file__).resolve().parent.parent / "freeswitch"
XML_FILES = sorted(FREESWITCH.rglob("*.xml"))
UUID = "5a1e0000-0000-4000-8000-000000000001"


def test_there_are_files_to_check():
    names = {p.relative_to(FREESWITCH).as_posix() for p in XML_FILES}
    assert {"autoload_configs/event_socket.conf.xml", "autoload_configs/modules.conf.xml",
            "dialplan/esl_audio_stream.xml"} <= names


@pytest.mark.parametrize("path", XML_FILES, ids=lambda p: p.name)
def test_every_xml_file_parses(path):
    root = ET.parse(path).getroot()
    assert root.tag in ("configuration", "include")


def params(path: Path) -> dict[str, str]:
    root = ET.parse(path).getroot()
    return {p.get("name"): p.get("value") for p in root.iter("param")}


def test_the_event_socket_listens_on_loopback_with_the_example_password():
    p = params(FREESWITCH / "autoload_configs" / "event_socket.conf.xml")
    daemon_default = DaemonConfig()
    example = load_config(EXAMPLE)
    assert int(p["listen-port"]) == daemon_default.esl_port == example.esl_port
    assert is_loopback(p["listen-ip"]) and p["listen-ip"] == example.esl_host
    assert p["password"].lower() != "cluecon"
    assert p["password"] == example.esl_password
    assert p["apply-inbound-acl"] == "loopback.auto"


def test_the_modules_the_daemon_relies_on_are_loaded():
    root = ET.parse(FREESWITCH / "autoload_configs" / "modules.conf.xml").getroot()
    loaded = [m.get("module") for m in root.iter("load")]
    assert len(loaded) == len(set(loaded))
    assert {"mod_event_socket", "mod_commands", "mod_dptools", "mod_loopback", "mod_sndfile",
            "mod_native_file", "mod_tone_stream", "mod_shout"} <= set(loaded)


def extensions() -> dict[str, list[tuple[str, str]]]:
    root = ET.parse(FREESWITCH / "dialplan" / "esl_audio_stream.xml").getroot()
    return {ext.get("name"): [(a.get("application"), a.get("data") or "")
                              for a in ext.iter("action")] for ext in root.iter("extension")}


def channel_variables(actions: list[tuple[str, str]]) -> dict[str, str]:
    """What the `set` actions leave on the channel, ${uuid} and ${caller_id_number} expanded."""
    out = {}
    for app, data in actions:
        if app == "set":
            name, _, value = data.partition("=")
            out[name] = value.replace("${uuid}", UUID).replace("${caller_id_number}", "1000")
    return out


def test_every_dialplan_variable_is_one_the_daemon_reads():
    for name, actions in extensions().items():
        for var in channel_variables(actions):
            assert var.startswith(("AUDIO_STREAM_", "STREAM_")), (name, var)
            if var.startswith("STREAM_"):
                assert var in VARIABLES, (name, var)


@pytest.mark.parametrize("name", ["esl_audio_stream_auto", "esl_audio_stream_voice_bot"])
def test_auto_start_extensions_start_what_they_say(name):
    actions = extensions()[name]
    assert actions[-1] == ("park", "")  # the stream starts when the channel parks
    variables = channel_variables(actions)
    park = Event({"Event-Name": "CHANNEL_PARK", "Unique-ID": UUID,
                  **{f"variable_{k}": v for k, v in variables.items()}})
    found = intake.auto_start(park)
    assert found is not None and found.source == "auto-start"
    cmd = commands.parse_command(found.args)
    assert isinstance(cmd, commands.Start)
    assert cmd.uuid == UUID and cmd.url == variables["AUDIO_STREAM_URL"]
    assert cmd.mix == variables.get("AUDIO_STREAM_MIX", "mono")
    assert cmd.metadata == variables.get("AUDIO_STREAM_METADATA")
    # the STREAM_* values are ones a stream accepts
    settings_from_variables({k: v for k, v in variables.items() if k.startswith("STREAM_")},
                            warn=pytest.fail)


def test_the_event_extension_fires_the_command_event_intake_reads():
    actions = extensions()["esl_audio_stream_event"]
    assert actions[-1] == ("park", "")
    data = next(d for app, d in actions if app == "event")
    # the `event` application splits on commas, then on the first "="
    headers = dict(part.strip().partition("=")[::2] for part in data.split(","))
    assert headers["Event-Name"] == "CUSTOM"  # else `event` fires CHANNEL_APPLICATION
    assert headers["Event-Subclass"] == intake.COMMAND_SUBCLASS
    assert ("CUSTOM", headers["Event-Subclass"]) == intake.SUBSCRIPTIONS
    fired = Event({k: v.replace("${uuid}", UUID) for k, v in headers.items()}
                  | {"Unique-ID": UUID, "Event-UUID": "e-1"})
    found = intake.from_event(fired)
    assert found is not None and found.uuid == UUID
    assert isinstance(commands.parse_command(found.args), commands.Start)


def test_the_readme_shows_the_example_configuration():
    readme = (FREESWITCH.parent / "README.md").read_text()
    assert EXAMPLE in readme
    assert re.search(r"freeswitch/dialplan/esl_audio_stream\.xml", readme)
