"""Per-call files of the audio the endpoint sent, and the `mod_audio_stream::play` event body.

mod_audio_stream writes every streamAudio chunk to `<temp>/<uuid>_<n>.tmp<ext>` and fires
`mod_audio_stream::play` with the message's `data` (minus audioData) plus `"file"`, so a
dialplan or ESL client can play it. Subscribers written for it keep working here: each chunk is
written to a file FreeSWITCH really plays, and the body has the same shape.

Two things differ on purpose. The extension is one FreeSWITCH plays as what it is: `.r8`/`.r16`
for raw L16 at 8/16 kHz, `.ul`/`.al` for G.711 at 8 kHz, `.wav` (with a header written here)
for raw or G.711 at any other rate -- mod_audio_stream's `.r24`/`.r32` would be read as 24-/32-BIT
audio, and `.r48`/`.r64`/`.pcmu`/`.pcma` are not registered at all. And the files live in a
private directory per call (0700, files 0600), created without following a symlink someone else
planted in a shared temp directory, so another local user can neither read the call's audio nor
make the daemon write elsewhere. When FreeSWITCH runs as another user (it must read the files in
the displace and broadcast modes), a group is given (`[playback] files_group`, FreeSWITCH's):
directories are then 0750 and files 0640, in that group, and nobody else gets anything.

The same directory holds the FIFOs FreeSWITCH records a call into for the `record` source
(call/recording.py): 0600, or 0620 in the files group (FreeSWITCH writes them, never reads).

File I/O here is blocking; it happens once per received chunk (not per frame) on a local disk.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import stat
import struct
from collections.abc import Callable
from pathlib import Path

from ..jsonfmt import compact
from .decode import Chunk

__all__ = ["CallFiles", "FilesError", "clean_base", "file_format", "play_event_body"]

_FIFO_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC

_UUID = re.compile(r"[A-Za-z0-9-]{1,128}\Z")
_MARKER = ".esl-audio-stream"  # in every per-call directory: clean_base removes only those
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


class FilesError(OSError):
    """The per-call directory or a file in it cannot be used safely."""


def _wav_header(rate: int, data_bytes: int) -> bytes:
    """A 44-byte RIFF/WAVE header for mono little-endian L16."""
    return struct.pack("<4sI4s4sIHHIIHH4sI", b"RIFF", 36 + data_bytes, b"WAVE", b"fmt ", 16,
                       1, 1, rate, rate * 2, 2, 16, b"data", data_bytes)


def file_format(chunk: Chunk) -> tuple[str, bytes, bytes]:
    """(extension, header, data) of the file for `chunk`: the payload as sent wherever
    FreeSWITCH plays it as is, else a WAV of the decoded L16."""
    kind, rate = chunk.kind, chunk.rate
    if kind in ("wav", "mp3", "ogg"):
        return kind, b"", chunk.original
    if kind in ("raw", "binary"):
        if rate == 8000:
            return "r8", b"", chunk.original
        if rate == 16000:
            return "r16", b"", chunk.original
    elif kind in ("pcmu", "pcma") and rate == 8000:
        return ("ul" if kind == "pcmu" else "al"), b"", chunk.original
    return "wav", _wav_header(rate, len(chunk.pcm)), chunk.pcm


def _check_base(base: Path, gid: int | None = None) -> None:
    """The base directory must not let another user swap our per-call directory: ours or
    root's, and not writable by others unless sticky (like /tmp). Made here if missing (0700,
    or 0750 in the files group)."""
    if not base.exists():
        os.makedirs(base, mode=0o700, exist_ok=True)
        if gid is not None:
            os.chown(base, -1, gid)
            os.chmod(base, 0o750)
    st = os.stat(base)
    if not stat.S_ISDIR(st.st_mode):
        raise FilesError(f"{base} is not a directory")
    if st.st_uid not in (os.getuid(), 0):
        raise FilesError(f"{base} belongs to another user (uid {st.st_uid})")
    if st.st_mode & 0o022 and not st.st_mode & stat.S_ISVTX:
        raise FilesError(f"{base} is writable by others and not sticky")


def _gid(group: str | int | None) -> int | None:
    """A group name or number -> its gid (None: no group)."""
    if group is None or group == "":
        return None
    if isinstance(group, int) or str(group).isdigit():
        return int(group)
    import grp

    try:
        return grp.getgrnam(str(group)).gr_gid
    except KeyError:
        raise FilesError(f"no such group {group!r} for the audio files") from None


class CallFiles:
    """The files of one call: `<base>/<uuid>/<uuid>_<n>.<ext>`, n counting from 0."""

    __slots__ = ("_checked", "_n", "base", "dir", "gid", "uuid", "written")

    def __init__(self, base_dir: str | Path, uuid: str, group: str | int | None = None) -> None:
        if not isinstance(uuid, str) or not _UUID.match(uuid):
            raise ValueError(f"unsafe call uuid for a file name: {uuid!r}")
        self.gid = _gid(group)
        self.base = Path(base_dir)
        self.uuid = uuid
        self.dir = self.base / uuid
        self._checked = False
        self._n = 0
        self.written = 0  # files written (for stats and tests)

    def _open_dir(self) -> int:
        """An fd of the per-call directory, created 0700 if missing; refused if it is a
        symlink, or belongs to someone else, or others may read it."""
        if not self._checked:
            _check_base(self.base, self.gid)
            self._checked = True
        created = False
        try:
            os.mkdir(self.dir, 0o700)
            created = True
        except FileExistsError:
            pass
        try:
            dfd = os.open(self.dir, _DIR_FLAGS)
        except OSError as e:  # ELOOP / ENOTDIR: a symlink or a file is in the way
            raise FilesError(f"{self.dir} is not a directory of ours: {e.strerror}") from None
        try:
            st = os.fstat(dfd)
            if st.st_uid != os.getuid():
                raise FilesError(f"{self.dir} belongs to another user (uid {st.st_uid})")
            gid = self.gid
            if created:
                if gid is not None:
                    os.fchown(dfd, -1, gid)
                os.fchmod(dfd, 0o700 if gid is None else 0o750)  # exactly, whatever the umask
                os.close(os.open(_MARKER, _FILE_FLAGS, 0o600, dir_fd=dfd))
            elif stat.S_IMODE(st.st_mode) & (0o077 if gid is None else 0o027) or (
                    gid is not None and st.st_gid != gid and stat.S_IMODE(st.st_mode) & 0o070):
                raise FilesError(f"{self.dir} is open to other users"
                                 f" (mode {stat.S_IMODE(st.st_mode):o})")
        except BaseException:
            os.close(dfd)
            raise
        return dfd

    def write(self, chunk: Chunk) -> Path:
        """Write the chunk's file (0600) and return its path."""
        ext, header, data = file_format(chunk)
        dfd = self._open_dir()
        try:
            name = f"{self.uuid}_{self._n}.{ext}"
            self._n += 1
            fd = os.open(name, _FILE_FLAGS, 0o600, dir_fd=dfd)
            try:
                if self.gid is not None:
                    os.fchown(fd, -1, self.gid)
                    os.fchmod(fd, 0o640)
                else:
                    os.fchmod(fd, 0o600)
                with os.fdopen(fd, "wb", closefd=False) as f:
                    if header:
                        f.write(header)
                    f.write(data)
            except BaseException:
                os.unlink(name, dir_fd=dfd)
                raise
            finally:
                os.close(fd)
        finally:
            os.close(dfd)
        self.written += 1
        return self.dir / name

    def make_fifo(self, name: str) -> tuple[Path, int]:
        """A FIFO for FreeSWITCH to record into (0600; 0620 in the files group: FreeSWITCH only
        writes it), made anew, and its read end opened without blocking -- FreeSWITCH's open for
        writing blocks until a reader is there. Returns its path and the read end (the
        caller's to close)."""
        dfd = self._open_dir()
        try:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(name, dir_fd=dfd)
            os.mkfifo(name, 0o600, dir_fd=dfd)
            fd = os.open(name, _FIFO_FLAGS, dir_fd=dfd)
            try:
                if self.gid is not None:
                    os.fchown(fd, -1, self.gid)
                    os.fchmod(fd, 0o620)
            except BaseException:
                os.close(fd)
                os.unlink(name, dir_fd=dfd)
                raise
        finally:
            os.close(dfd)
        return self.dir / name, fd

    def open_fifo(self, path: Path | str) -> int | None:
        """The read end of a FIFO of ours left in the call's directory (by a previous daemon
        process), opened without blocking; None when there is none."""
        path = Path(path)
        if path.parent != self.dir:
            return None
        try:
            fd = os.open(path, _FIFO_FLAGS)
        except OSError:
            return None
        st = os.fstat(fd)
        if not stat.S_ISFIFO(st.st_mode) or st.st_uid != os.getuid():
            os.close(fd)
            return None
        return fd

    def remove(self, path: Path | str) -> None:
        """Delete one file this call wrote (once it has played); never raises, and touches
        nothing outside the call's directory."""
        path = Path(path)
        if path.parent != self.dir:
            return
        with contextlib.suppress(OSError):
            os.unlink(path)

    def remove_if_empty(self) -> None:
        """Delete the call's directory if nothing but its marker is left in it; never raises."""
        try:
            names = os.listdir(self.dir)
        except OSError:
            return
        if set(names) <= {_MARKER}:
            self.remove_all()

    def remove_all(self) -> None:
        """Delete the call's directory and everything in it; never raises. Anything in its
        place that is not our directory (a symlink, another user's) is left alone."""
        try:
            st = os.lstat(self.dir)
        except OSError:
            return
        if stat.S_ISDIR(st.st_mode) and st.st_uid == os.getuid():
            shutil.rmtree(self.dir, ignore_errors=True)  # fd-based: follows no symlink inside


def clean_base(base_dir: str | Path, keep: frozenset[str] | set[str] = frozenset(),
               spare_fifos: bool = False,
               on_fifo: Callable[[str, str], None] | None = None) -> int:
    """Remove per-call directories a previous run left in `base_dir`; returns how many. Only
    directories of ours carrying the marker are touched, never those of the calls in `keep`,
    nor, with `spare_fifos` (at start-up), those holding a FIFO: FreeSWITCH may still be
    recording into it for a stream the next process carries on (its reconcile removes what no
    stream claims). `on_fifo(uuid, path)` is called for each FIFO in a directory about to go
    (to tell FreeSWITCH to stop recording into it)."""
    base = Path(base_dir)
    removed = 0
    try:
        entries = list(os.scandir(base))
    except (FileNotFoundError, NotADirectoryError):
        return 0
    uid = os.getuid()
    for entry in entries:
        try:
            if (entry.name in keep or not _UUID.match(entry.name)
                    or not entry.is_dir(follow_symlinks=False)
                    or entry.stat(follow_symlinks=False).st_uid != uid
                    or not os.path.lexists(os.path.join(entry.path, _MARKER))
                    or (spare_fifos and _holds_fifo(entry.path))):
                continue
        except OSError:
            continue
        if on_fifo is not None:
            for path in _fifos_in(entry.path):
                on_fifo(entry.name, path)
        shutil.rmtree(entry.path, ignore_errors=True)
        if not os.path.lexists(entry.path):
            removed += 1
    return removed


def _holds_fifo(path: str) -> bool:
    return bool(_fifos_in(path))


def _fifos_in(path: str) -> list[str]:
    try:
        return [e.path for e in os.scandir(path)
                if stat.S_ISFIFO(e.stat(follow_symlinks=False).st_mode)]
    except OSError:
        return []


def play_event_body(chunk: Chunk, path: Path | str) -> str:
    """The `mod_audio_stream::play` body: the message's `data` without audioData, then
    `"file"`, as compact JSON (mod_audio_stream prints it with cJSON_PrintUnformatted)."""
    body = {k: v for k, v in chunk.meta.items() if k != "file"}
    body["file"] = str(path)
    return compact(body)
