"""media/files: per-call files (names, extensions FreeSWITCH plays, modes, safety) and the
`mod_audio_stream::play` body."""

from __future__ import annotations

import base64
import io
import json
import os
import stat
import wave

import pytest

from esl_audio_stream.dev.analysis import dominant_frequency
from esl_audio_stream.media.decode import Chunk, decode_binary, decode_stream_audio
from esl_audio_stream.media.files import (
    CallFiles,
    FilesError,
    clean_base,
    file_format,
    play_event_body,
)

np = pytest.importorskip("numpy")
sf = pytest.importorskip("soundfile")

UUID = "0f6c3a8e-5d1b-4c7a-9e2f-1a2b3c4d5e6f"


def tone_l16(freq: float, rate: int, seconds: float = 0.3) -> bytes:
    t = np.arange(int(rate * seconds)) / rate
    return np.rint(np.sin(2 * np.pi * freq * t) * 10000).astype("<i2").tobytes()


def chunk(kind: str, payload: bytes, rate: int | None = None, **extra) -> Chunk:
    data = {"audioDataType": kind, "audioData": base64.b64encode(payload).decode(), **extra}
    if rate is not None:
        data["sampleRate"] = rate
    return decode_stream_audio(data)


def mode(path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


@pytest.fixture
def umask0():
    old = os.umask(0)  # the modes must not depend on the daemon's umask
    yield
    os.umask(old)


def test_names_modes_and_counter(tmp_path, umask0):
    files = CallFiles(tmp_path / "base", UUID)
    assert not files.dir.exists()  # created lazily
    pcm = tone_l16(440, 8000)
    p0 = files.write(chunk("raw", pcm, 8000))
    p1 = files.write(chunk("raw", pcm, 16000))
    assert p0 == tmp_path / "base" / UUID / f"{UUID}_0.r8"
    assert p1 == tmp_path / "base" / UUID / f"{UUID}_1.r16"
    assert p0.read_bytes() == pcm and p1.read_bytes() == pcm
    assert mode(files.dir) == 0o700
    assert mode(p0) == 0o600 and mode(p1) == 0o600
    assert mode(tmp_path / "base") == 0o700
    assert files.written == 2


def test_modes_with_a_strict_umask(tmp_path):
    old = os.umask(0o377)
    try:
        p = CallFiles(tmp_path, UUID).write(decode_binary(tone_l16(440, 8000), 8000))
    finally:
        os.umask(old)
    assert mode(p.parent) == 0o700 and mode(p) == 0o600


def _read_wav(path):
    with wave.open(str(path), "rb") as w:
        assert (w.getnchannels(), w.getsampwidth()) == (1, 2)
        return w.getframerate(), w.readframes(w.getnframes())


def test_extensions_per_kind_and_rate(tmp_path):
    files = CallFiles(tmp_path, UUID)
    pcm8, pcm24 = tone_l16(500, 8000), tone_l16(500, 24000)
    # raw at rates FreeSWITCH has no raw extension for: a WAV (.r24 would be 24-BIT audio)
    for rate in (24000, 32000, 44100, 48000, 11025):
        c = chunk("raw", tone_l16(500, rate), rate)
        p = files.write(c)
        assert p.suffix == ".wav"
        got_rate, frames = _read_wav(p)
        assert got_rate == rate and frames == c.pcm
    # containers keep their bytes and extension
    for kind, fmt in (("wav", "WAV"), ("mp3", "MP3"), ("ogg", "OGG")):
        buf = io.BytesIO()
        sf.write(buf, np.frombuffer(pcm24, "<i2"), 24000, format=fmt)
        c = chunk(kind, buf.getvalue())
        p = files.write(c)
        assert p.suffix == "." + kind and p.read_bytes() == buf.getvalue()
        data, rate = sf.read(str(p), dtype="int16")
        assert rate == 24000
        assert abs(dominant_frequency(data.astype("<i2").tobytes(), rate) - 500) < 2.0
    # G.711: .ul/.al at 8 kHz with the bytes as sent, else a WAV of the decoded audio
    ul = chunk("pcmu", b"\x11\x22" * 400)
    al = chunk("pcma", b"\x55\xd5" * 400)
    assert files.write(ul).suffix == ".ul" and files.write(al).suffix == ".al"
    assert (files.dir / f"{UUID}_{files.written - 2}.ul").read_bytes() == b"\x11\x22" * 400
    ul16 = chunk("pcmu", b"\x11\x22" * 400, 16000)
    p = files.write(ul16)
    assert p.suffix == ".wav" and _read_wav(p) == (16000, ul16.pcm)
    # binary messages follow the raw rules
    assert files.write(decode_binary(pcm8, 8000)).suffix == ".r8"
    assert files.write(decode_binary(pcm24, 24000)).suffix == ".wav"
    names = sorted(os.listdir(files.dir))
    assert len([n for n in names if n.startswith(UUID + "_")]) == files.written == 13


def test_file_format_table():
    pcm = b"\x01\x00" * 8
    assert file_format(Chunk(pcm, 8000, "raw", pcm, {}))[0] == "r8"
    assert file_format(Chunk(pcm, 16000, "raw", pcm, {}))[0] == "r16"
    ext, header, data = file_format(Chunk(pcm, 24000, "raw", pcm, {}))
    assert ext == "wav" and len(header) == 44 and data is pcm
    assert header[:4] == b"RIFF" and int.from_bytes(header[4:8], "little") == 36 + len(pcm)
    assert file_format(Chunk(pcm, 8000, "pcma", b"x" * 8, {}))[1:] == (b"", b"x" * 8)


def test_remove_all(tmp_path):
    files = CallFiles(tmp_path, UUID)
    files.remove_all()  # nothing yet: fine
    for _ in range(3):
        files.write(decode_binary(b"\x00\x01" * 80, 8000))
    assert len(os.listdir(files.dir)) == 4  # three files and the marker
    files.remove_all()
    assert not files.dir.exists() and tmp_path.exists()
    files.remove_all()
    p = files.write(decode_binary(b"\x00\x01" * 80, 8000))  # a later write starts again
    assert p.name == f"{UUID}_3.r8" and p.exists()


def test_uuid_must_be_safe_in_a_path(tmp_path):
    for bad in ["", "../etc", "a/b", "a.b", ".", "..", "x" * 129, "a\nb", "a b", "a\x00b",
                "ä", None, 5]:
        with pytest.raises(ValueError):
            CallFiles(tmp_path, bad)
    assert CallFiles(tmp_path, "ABC-123-def").dir == tmp_path / "ABC-123-def"


def test_a_planted_symlink_is_refused(tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir(mode=0o700)
    base = tmp_path / "base"
    base.mkdir(mode=0o700)
    (base / UUID).symlink_to(elsewhere)
    files = CallFiles(base, UUID)
    with pytest.raises(FilesError, match="not a directory of ours"):
        files.write(decode_binary(b"\x00\x00" * 10, 8000))
    assert os.listdir(elsewhere) == []
    files.remove_all()  # leaves the symlink and its target alone
    assert (base / UUID).is_symlink() and elsewhere.is_dir()


def test_an_open_or_foreign_directory_is_refused(tmp_path):
    (tmp_path / UUID).mkdir()
    os.chmod(tmp_path / UUID, 0o755)
    with pytest.raises(FilesError, match="open to other users"):
        CallFiles(tmp_path, UUID).write(decode_binary(b"\x00\x00" * 10, 8000))
    assert os.listdir(tmp_path / UUID) == []
    if os.getuid() != 0:
        return  # chown needs root; the mode check above still ran
    os.chmod(tmp_path / UUID, 0o700)
    os.chown(tmp_path / UUID, 4321, 4321)
    with pytest.raises(FilesError, match="another user"):
        CallFiles(tmp_path, UUID).write(decode_binary(b"\x00\x00" * 10, 8000))


def test_an_unsafe_base_is_refused(tmp_path):
    base = tmp_path / "shared"
    base.mkdir()
    os.chmod(base, 0o777)  # anyone could swap our directory for theirs
    with pytest.raises(FilesError, match="not sticky"):
        CallFiles(base, UUID).write(decode_binary(b"\x00\x00" * 10, 8000))
    os.chmod(base, 0o1777)  # like /tmp: fine, the per-call directory is then checked
    p = CallFiles(base, UUID).write(decode_binary(b"\x00\x00" * 10, 8000))
    assert p.exists() and mode(p.parent) == 0o700


def test_clean_base_removes_only_our_leftovers(tmp_path):
    base = tmp_path / "base"
    left = [CallFiles(base, f"call-{i}") for i in range(3)]
    for f in left:
        f.write(decode_binary(b"\x00\x00" * 10, 8000))
    foreign = base / "not-ours"  # uuid-like name, no marker
    foreign.mkdir()
    (foreign / "keep.txt").write_text("x")
    (base / "plain-file").write_text("y")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / ".esl-audio-stream").write_text("")
    (outside / "precious").write_text("z")
    (base / "linked").symlink_to(outside)
    assert clean_base(base) == 3
    assert sorted(os.listdir(base)) == ["linked", "not-ours", "plain-file"]
    assert (outside / "precious").exists() and (foreign / "keep.txt").exists()
    assert clean_base(base) == 0
    assert clean_base(tmp_path / "missing") == 0


def test_play_event_body():
    data = {"audioDataType": "raw", "sampleRate": 8000,
            "audioData": base64.b64encode(b"\x00\x00" * 4).decode()}
    c = decode_stream_audio(data)
    body = play_event_body(c, "/tmp/x/u_0.r8")
    assert body == '{"audioDataType":"raw","sampleRate":8000,"file":"/tmp/x/u_0.r8"}'
    # extra fields pass through in their order, audioData never; a "file" field is replaced
    data = {"audioDataType": "raw", "file": "theirs", "sampleRate": 16000,
            "audioData": base64.b64encode(b"\x00\x00").decode(), "text": "héllo \"q\"",
            "n": [1, {"a": None}]}
    body = play_event_body(decode_stream_audio(data), "/p/y.r16")
    assert body == ('{"audioDataType":"raw","sampleRate":16000,"text":"héllo \\"q\\"",'
                    '"n":[1,{"a":null}],"file":"/p/y.r16"}')
    assert json.loads(body)["file"] == "/p/y.r16"


def test_a_files_group_lets_freeswitch_read_and_nobody_else(tmp_path, umask0):
    """FreeSWITCH under its own user reads the files through their group: 0750/0640."""
    import grp

    gid = grp.getgrnam("audio").gr_gid if os.getuid() == 0 else os.getgid()
    files = CallFiles(tmp_path / "base", UUID, str(gid))
    path = files.write(chunk("raw", tone_l16(440, 8000), 8000))
    for p, want in ((tmp_path / "base", 0o750), (files.dir, 0o750), (path, 0o640)):
        assert mode(p) == want, (p, oct(mode(p)))
        assert os.lstat(p).st_gid == gid
    files.write(chunk("raw", tone_l16(440, 8000), 8000))  # the existing directory is accepted
    os.chmod(files.dir, 0o755)  # but not one others may read
    with pytest.raises(FilesError):
        CallFiles(tmp_path / "base", UUID, gid).write(chunk("raw", tone_l16(440, 8000), 8000))
    with pytest.raises(FilesError, match="no such group"):
        CallFiles(tmp_path / "base", UUID, "no-such-group-here")
