"""app/fork_commands.py: uuid_audio_fork's words and answers, as mod_audio_fork.c reads them."""

from __future__ import annotations

import pytest

from esl_audio_stream.app import fork_commands as fc

U = "0f1e2d3c-aaaa-bbbb-cccc-000000000001"
URL = "ws://127.0.0.1:9000/path?x=1"


def refused(args: str) -> fc.Refused:
    with pytest.raises(fc.Refused) as info:
        fc.parse(args)
    return info.value


def test_the_usage_line_is_mod_audio_fork_s():
    assert fc.USAGE == (
        "-USAGE: <uuid> [start | stop | send_text | pause | resume | graceful-shutdown | "
        "stop_play ] [wss-url | path] [mono | mixed | stereo] [8000 | 16000 | 24000 | 32000 | "
        "64000] [bugname] [metadata] [bidirectionalAudio_enabled] "
        "[bidirectionalAudio_stream_enabled] [bidirectionalAudio_stream_samplerate]\n")
    assert (fc.OK, fc.ERR) == ("+OK Success\n", "-ERR Operation Failed\n")


@pytest.mark.parametrize("args", ["", "   ", U, f"{U} start", f"{U} start {URL}",
                                  f"{U} start {URL} mono"])
def test_too_few_words_answer_usage(args):
    assert refused(args).answer == fc.USAGE


@pytest.mark.parametrize(("args", "want"), [
    (f"{U} start {URL} mono 8k",
     fc.ForkStart(U, URL, "mono", 8000, "audio_fork", None, True, False, 0)),
    (f"{U} start {URL} stereo 16k",
     fc.ForkStart(U, URL, "stereo", 16000, "audio_fork", None, True, False, 0)),
    (f"{U} start {URL} mixed 24000 mybug",
     fc.ForkStart(U, URL, "mixed", 24000, "mybug", None, True, False, 0)),
    (f'{U} start {URL} mono 16000 {{"a":1}}',
     fc.ForkStart(U, URL, "mono", 16000, "audio_fork", '{"a":1}', True, False, 0)),
    (f"{U} start {URL} mono 16000 [1,2]",
     fc.ForkStart(U, URL, "mono", 16000, "audio_fork", "[1,2]", True, False, 0)),
    (f'{U} start {URL} mono 64000 bug2 {{"a":1}}',
     fc.ForkStart(U, URL, "mono", 64000, "bug2", '{"a":1}', True, False, 0)),
    # 7 to 9 words: bugname and metadata; the bidirectional words need all three
    (f'{U} start {URL} mono 8k bug2 meta true true',
     fc.ForkStart(U, URL, "mono", 8000, "bug2", "meta", True, False, 0)),
    (f'{U} start {URL} mono 8k bug2 {{"a":1}} true true 24000',
     fc.ForkStart(U, URL, "mono", 8000, "bug2", '{"a":1}', True, True, 24000)),
    (f"{U} start {URL} mono 8k '' '' false false 0",
     fc.ForkStart(U, URL, "mono", 8000, "audio_fork", None, False, False, 0)),
    (f"{U} start {URL} mono 8k '' '' True yes 16000",  # only "true" is true
     fc.ForkStart(U, URL, "mono", 8000, "audio_fork", None, False, False, 16000)),
    # http(s) is taken as ws(s), as parse_ws_uri does
    (f"{U} start https://example.com/x mono 8k",
     fc.ForkStart(U, "wss://example.com/x", "mono", 8000, "audio_fork", None, True, False, 0)),
    (f"{U} start HTTP://example.com:81 mono 8k",
     fc.ForkStart(U, "ws://example.com:81", "mono", 8000, "audio_fork", None, True, False, 0)),
    # a metadata with blanks is one word only when quoted (switch_separate_string)
    (f"""{U} start {URL} mono 8k mybug '{{"text": "two words"}}'""",
     fc.ForkStart(U, URL, "mono", 8000, "mybug", '{"text": "two words"}', True, False, 0)),
    (f"{U} START {URL} mono 8k",
     fc.ForkStart(U, URL, "mono", 8000, "audio_fork", None, True, False, 0)),
])
def test_start(args, want):
    assert fc.parse(args) == want


def test_a_metadata_with_blanks_unquoted_is_split_as_freeswitch_splits_it():
    cmd = fc.parse(f'{U} start {URL} mono 8k {{"text": "two words"}}')
    assert (cmd.bugname, cmd.metadata) == ('{"text":', '"two')


@pytest.mark.parametrize(("args", "answer"), [
    (f"{U} start {URL} MONO 8k", fc.SILENT),  # an unknown mix type: no answer at all
    (f"{U} start {URL} quad 8k", fc.SILENT),
    (f"{U} start {URL} mono 11025", fc.ERR),
    (f"{U} start {URL} mono 16K", fc.ERR),  # atoi("16K") = 16
    (f"{U} start {URL} mono 72000", fc.ERR),
    (f"{U} start {URL} mono 0", fc.ERR),
    (f"{U} start ftp://x/ mono 8k", fc.ERR),
    (f"{U} start ws:// mono 8k", fc.ERR),
    (f"{U} start {URL} mono 8k b m true true 5", fc.ERR),
    (f"{U} send_text", fc.SILENT),
    (f"{U} dance", fc.ERR),
    ("bad/uuid stop", fc.ERR),
])
def test_refused(args, answer):
    assert refused(args).answer == answer


@pytest.mark.parametrize(("args", "want"), [
    (f"{U} stop", fc.ForkStop(U, "audio_fork", None)),
    (f"{U} stop mybug", fc.ForkStop(U, "mybug", None)),
    (f'{U} stop {{"bye":1}}', fc.ForkStop(U, "audio_fork", '{"bye":1}')),
    (f"{U} stop mybug bye", fc.ForkStop(U, "mybug", "bye")),
    (f"{U} stop mybug bye now", fc.ForkStop(U, "mybug", "bye")),  # the 4th word only
    (f"{U} send_text hello", fc.ForkSendText(U, "hello", None)),  # a bugname, no text
    (f'{U} send_text {{"a":1}}', fc.ForkSendText(U, "audio_fork", '{"a":1}')),
    (f"{U} send_text mybug hello", fc.ForkSendText(U, "mybug", "hello")),
    (f"{U} send_text mybug 'hello world'", fc.ForkSendText(U, "mybug", "hello world")),
    (f"{U} pause", fc.ForkPause(U, "audio_fork")),
    (f"{U} Pause b", fc.ForkPause(U, "b")),
    (f"{U} resume b", fc.ForkResume(U, "b")),
    (f"{U} graceful-shutdown", fc.ForkGracefulShutdown(U, "audio_fork")),
    (f"{U} graceful-shutdown b", fc.ForkGracefulShutdown(U, "b")),
    (f"{U} stop_play", fc.ForkStopPlay(U, "audio_fork")),
    (f"{U} stop_play b", fc.ForkStopPlay(U, "b")),
])
def test_the_commands_on_a_bug(args, want):
    assert fc.parse(args) == want


def test_bytes_that_are_not_utf8_are_refused():
    assert refused(f"{U} send_text x ".encode() + b"\xff").answer == fc.ERR
    assert fc.parse(f"{U} send_text b é".encode()) == fc.ForkSendText(U, "b", "é")
