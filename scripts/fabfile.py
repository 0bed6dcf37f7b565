"""Deploy esl-audio-stream to a fleet of hosts with Fabric 3.

    fab -H h1,h2,h3 deploy [--config FILE] [--wheelhouse DIR]
    fab -H h1,h2,h3 rollback | status | logs [--lines N]
    fab build --out DIR [--source DIR]

Hosts have no internet: `deploy` builds a wheelhouse here once (`pip wheel` of the project and
every dependency, plus pip itself), uploads it, and installs it on each host into its own
virtualenv, `<root>/releases/<version>-<hash>`, with `pip install --no-index --find-links`. Only
when that release is installed and imports cleanly does `current` change, atomically (`ln -sfn`
to a temporary name, then `mv -T`); the old target becomes `previous`. The service is restarted
and asked `GET /streams`; a host that does not answer switches back, restarts its previous
release and is reported failed. Every host runs at once (`ParallelExecutor`, named in
scripts/fabric.yaml) and gets one line of outcome; the run fails if any host failed.

Settings live under `deploy:` in Fabric's configuration (scripts/fabric.yaml, a file given with
`fab -f`, or FABRIC_DEPLOY_* variables); `deploy.hosts.<host>` overrides any of them for one host.
See Settings.
"""

from __future__ import annotations

import atexit
import concurrent.futures
import hashlib
import posixpath
import shlex
import subprocess
import sys
import tarfile
import tempfile
import threading
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from fabric import Connection, task
from fabric.executor import Executor
from fabric.tasks import ConnectionCall
from invoke.exceptions import Exit

HERE = Path(__file__).resolve().parent
PROJECT = HERE.parent
UNIT_TEMPLATE = HERE / "systemd" / "esl-audio-stream.service"
CONFIG_TEMPLATE = HERE / "deploy" / "config.toml"
NAME = "esl-audio-stream"
PACKAGE = "esl_audio_stream"


@dataclass(frozen=True)
class Settings:
    """Where and how one host runs the daemon."""

    #: releases/<release>/ (one virtualenv each), current and previous symlinks.
    root: str = "/opt/esl-audio-stream"
    #: The daemon's TOML configuration on the host.
    config_file: str = "/etc/esl-audio-stream/config.toml"
    #: A local TOML file `deploy` installs as config_file (`deploy --config` wins); without
    #: either, the template scripts/deploy/config.toml, and only where the host has none.
    config_source: str = ""
    #: systemd (production) | pidfile (Debian's start-stop-daemon, for hosts without systemd).
    service: str = "systemd"
    #: The daemon's own user, created if missing ("" in pidfile mode: the SSH user).
    user: str = NAME
    #: pidfile mode: the pidfile and the daemon's log.
    run_dir: str = "/run/esl-audio-stream"
    unit_dir: str = "/etc/systemd/system"
    #: The host's Python: the version the wheels were built for (python3-venv not needed).
    python: str = "python3"
    #: The daemon's arguments; {config_file} is replaced.
    run_args: str = "run --config {config_file}"
    #: What the health check asks; "" = http://<control.listen>/streams from the host's config.
    health_url: str = ""
    #: How long a restarted daemon gets to answer the health check.
    health_timeout: float = 20.0
    #: pidfile mode: SIGTERM, then SIGKILL after this long (above streams.drain_timeout).
    stop_timeout: float = 30.0
    #: Releases kept on a host (current and previous always are).
    keep: int = 3
    #: Run the host's commands through sudo (SSH user is not root).
    sudo: bool = False
    #: Bound on any one remote command (an install included).
    command_timeout: float = 300.0


class DeployError(Exception):
    """A host could not do what it was asked; the message says what and why."""


def settings_for(c: Connection) -> Settings:
    """The `deploy:` settings with the host's own `deploy.hosts.<host>` overrides applied."""
    if not isinstance(c, Connection):
        raise Exit("which hosts? e.g. fab -H host1,host2 deploy")
    conf = dict(c.config.get("deploy") or {})
    per_host = dict((conf.pop("hosts", None) or {}).get(c.original_host) or {})
    known = {f.name: f for f in fields(Settings)}
    values: dict[str, Any] = {}
    for key, value in {**conf, **per_host}.items():
        if key not in known:
            raise DeployError(f"unknown setting deploy.{key} (known: {', '.join(known)})")
        kind = type(getattr(Settings, key))
        try:
            values[key] = (value if isinstance(value, kind) else
                           str(value).lower() in ("1", "true", "yes", "on") if kind is bool
                           else kind(value))
        except (TypeError, ValueError):
            raise DeployError(f"deploy.{key}: {value!r} is not a {kind.__name__}") from None
    s = Settings(**values)
    if s.service not in ("systemd", "pidfile"):
        raise DeployError(f"deploy.service must be systemd or pidfile, not {s.service!r}")
    return s


# -- the wheelhouse, built once per run -------------------------------------------------------

@dataclass(frozen=True)
class Wheelhouse:
    """A directory of wheels: the project's, its dependencies', pip's."""

    path: Path
    version: str
    python_tag: str  # cp311: the host's Python must be this one
    digest: str  # of every wheel: the same wheelhouse is the same release
    pip_wheel: str  # file name of pip's wheel, which installs the others on the host

    @property
    def release(self) -> str:
        return f"{self.version}-{self.digest[:10]}"


def read_wheelhouse(path: Path) -> Wheelhouse:
    ours = sorted(path.glob(f"{PACKAGE}-*.whl"))
    if len(ours) != 1:
        raise DeployError(f"{path}: want exactly one {PACKAGE} wheel, found {len(ours)}")
    pips = sorted(path.glob("pip-*.whl"))
    if len(pips) != 1:
        raise DeployError(f"{path}: want exactly one pip wheel (fab build puts it in),"
                          f" found {len(pips)}")
    _, version, python_tag, *_ = ours[0].name[:-4].split("-")
    h = hashlib.sha256()
    for wheel in sorted(path.glob("*.whl")):
        h.update(wheel.name.encode() + b"\0" + hashlib.sha256(wheel.read_bytes()).digest())
    return Wheelhouse(path, version, python_tag, h.hexdigest(), pips[0].name)


def build_wheelhouse(out: Path, source: Path = PROJECT) -> Wheelhouse:
    """`pip wheel` of the project at `source` and all it needs, into the empty directory `out`."""
    out.mkdir(parents=True, exist_ok=True)
    if any(out.iterdir()):
        raise DeployError(f"{out} is not empty")
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--wheel-dir",
                           str(out), str(source), "pip"], capture_output=True, text=True,
                          timeout=900)
    if done.returncode:
        raise DeployError(f"pip wheel failed: {(done.stderr or done.stdout).strip()[-2000:]}")
    return read_wheelhouse(out)


_prepared: dict[str, tuple[Wheelhouse, Path]] = {}
_prepare_lock = threading.Lock()


def _prepare(wheelhouse: str) -> tuple[Wheelhouse, Path]:
    """The wheelhouse (given, or built now) and its tarball; once per run, whatever the hosts."""
    with _prepare_lock:
        if wheelhouse not in _prepared:
            tmp = tempfile.TemporaryDirectory(prefix="eas-deploy-")
            atexit.register(tmp.cleanup)
            if wheelhouse:
                wh = read_wheelhouse(Path(wheelhouse))
            else:
                print(f"building the wheelhouse of {PROJECT}", flush=True)
                wh = build_wheelhouse(Path(tmp.name) / "wheelhouse")
            tar = Path(tmp.name) / f"{wh.release}.tar"
            with tarfile.open(tar, "w") as t:  # wheels are compressed already
                for wheel in sorted(wh.path.glob("*.whl")):
                    t.add(wheel, arcname=wheel.name)
            _prepared[wheelhouse] = (wh, tar)
        return _prepared[wheelhouse]


# -- remote commands --------------------------------------------------------------------------

def _sh(c: Connection, s: Settings, cmd: str, what: str | None = None,
        timeout: float | None = None) -> str:
    """Run `cmd` on the host; its stdout. A failure raises DeployError saying `what` failed."""
    runner = c.sudo if s.sudo else c.run
    r = runner(cmd, hide=True, warn=True, in_stream=False, timeout=timeout or s.command_timeout)
    if r.exited != 0:
        if what is None:
            raise DeployError(f"`{cmd}` exited {r.exited}: {_tail(r.stderr or r.stdout)}")
        raise DeployError(f"{what}: {_tail(r.stderr or r.stdout) or f'exit {r.exited}'}")
    return r.stdout


def _ok(c: Connection, s: Settings, cmd: str) -> bool:
    runner = c.sudo if s.sudo else c.run
    return runner(cmd, hide=True, warn=True, in_stream=False, timeout=s.command_timeout).ok


def _tail(text: str) -> str:
    lines = [ln for ln in (text or "").strip().splitlines() if ln.strip()]
    return lines[-1].strip() if lines else ""


def _readlink(c: Connection, s: Settings, link: str) -> str:
    runner = c.sudo if s.sudo else c.run
    r = runner(f"readlink {shlex.quote(link)}", hide=True, warn=True, in_stream=False,
               timeout=s.command_timeout)
    return r.stdout.strip() if r.ok else ""


def _put(c: Connection, s: Settings, local: str, remote: str) -> None:
    """Upload a file (through /tmp and a root `mv` with sudo), with a bound on every wait."""
    c.sftp().get_channel().settimeout(s.command_timeout)
    if not s.sudo:
        c.put(local, remote)
        return
    staged = f"/tmp/{NAME}-{posixpath.basename(remote)}.upload"
    c.put(local, staged)
    _sh(c, s, f"mv -T {shlex.quote(staged)} {shlex.quote(remote)}")


def _switch(c: Connection, s: Settings, name: str, target: str) -> None:
    """Point <root>/<name> at `target` atomically: a new symlink renamed over the old one."""
    link = posixpath.join(s.root, name)
    tmp = posixpath.join(s.root, f".{name}.tmp")
    _sh(c, s, f"ln -sfn {shlex.quote(target)} {shlex.quote(tmp)}"
              f" && mv -T {shlex.quote(tmp)} {shlex.quote(link)}", f"switching {name}")


def _unlink(c: Connection, s: Settings, name: str) -> None:
    _sh(c, s, f"rm -f {shlex.quote(posixpath.join(s.root, name))}")


# -- steps ------------------------------------------------------------------------------------

def _preflight(c: Connection, s: Settings, wh: Wheelhouse) -> None:
    """What the host must have before anything is changed on it (one round trip)."""
    py = shlex.quote(s.python)
    tool = "systemctl" if s.service == "systemd" else "start-stop-daemon"
    out = _sh(c, s, (
        f"echo python=$({py} -c 'import sys, venv; print(\"cp%d%d\" % sys.version_info[:2])'"
        " 2>/dev/null);"
        " echo speexdsp=$(dpkg-query -W -f='${Status}' libspeexdsp1 2>/dev/null | tr ' ' _);"
        f" echo tool=$(command -v {tool} || ls /usr/sbin/{tool} /sbin/{tool} 2>/dev/null)"))
    found = dict(line.partition("=")[::2] for line in out.splitlines() if "=" in line)
    if not found.get("python"):
        raise DeployError(f"{s.python} does not run on this host (or has no venv module)")
    if found["python"] != wh.python_tag:
        raise DeployError(f"the wheels are for {wh.python_tag}, this host's {s.python} is"
                          f" {found['python']}")
    if found.get("speexdsp") != "install_ok_installed":
        raise DeployError("libspeexdsp1 is not installed: apt-get install libspeexdsp1")
    if not found.get("tool"):
        raise DeployError(f"deploy.service is {s.service} but this host has no {tool}")


def _install_release(c: Connection, s: Settings, wh: Wheelhouse, tar: Path, target: str) -> None:
    """A virtualenv at `target` with the wheelhouse installed, marked complete only at the end."""
    q = shlex.quote
    incoming = posixpath.join(s.root, "incoming", wh.release)
    _sh(c, s, f"rm -rf {q(target)} {q(incoming)} && mkdir -p {q(incoming)}"
              f" {q(posixpath.join(s.root, 'releases'))}")
    remote_tar = incoming + ".tar"
    try:
        _put(c, s, str(tar), remote_tar)
        _sh(c, s, f"tar -xf {q(remote_tar)} -C {q(incoming)}", "unpacking the wheelhouse")
        _sh(c, s, f"{q(s.python)} -m venv --without-pip {q(target)}", "creating the virtualenv")
        # pip runs from its own wheel (as ensurepip does), so the host needs no pip of its own
        pip = posixpath.join(incoming, wh.pip_wheel, "pip")
        _sh(c, s, f"PIP_CONFIG_FILE=/dev/null {q(target)}/bin/python {q(pip)} install --quiet"
                  f" --no-index --find-links {q(incoming)} {PACKAGE}=={wh.version}",
            "installing the wheels")
    except BaseException:
        _ok(c, s, f"rm -rf {q(target)}")
        raise
    finally:
        _ok(c, s, f"rm -rf {q(incoming)} {q(remote_tar)}")
    _sh(c, s, f"touch {q(target)}/.installed")


def _check_release(c: Connection, s: Settings, target: str, config: str) -> None:
    """The release imports its C parts (libspeexdsp) and accepts its arguments and config."""
    q = shlex.quote
    # The composition root imports the whole runtime, the two C extensions included.
    _sh(c, s, f"{q(target)}/bin/python -c 'import {PACKAGE}.media.resample,"
              f" {PACKAGE}.service'", "the new release does not import")
    helps = _sh(c, s, f"{q(target)}/bin/{NAME} run --help")
    if "--config" in s.run_args and "--config" not in helps:
        raise DeployError("this release's `run` has no --config: set deploy.run_args to flags")
    if config and _ok(c, s, f"{q(target)}/bin/{NAME} config --help"):
        _sh(c, s, f"{q(target)}/bin/{NAME} config --check {q(config)} >/dev/null",
            "the configuration is refused")


def _install_config(c: Connection, s: Settings, local: str) -> tuple[str, bool]:
    """Upload the configuration next to its place (not in use yet). Returns (staged path, whether
    there is one to install): the given file, or the template where the host has none."""
    q = shlex.quote
    if not local:
        if _ok(c, s, f"test -e {q(s.config_file)}"):
            return "", False
        local = str(CONFIG_TEMPLATE)
    staged = s.config_file + ".new"
    _sh(c, s, f"mkdir -p {q(posixpath.dirname(s.config_file))}")
    _put(c, s, local, staged)
    group = f" && chgrp {q(s.user)} {q(staged)}" if s.user else ""
    _sh(c, s, f"chmod 0640 {q(staged)}{group}", "setting the configuration's mode")
    return staged, True


def _put_config(c: Connection, s: Settings, staged: str) -> bool:
    """Move the staged configuration into place, keeping the old one; whether one was kept."""
    q = shlex.quote
    kept = _ok(c, s, f"test -e {q(s.config_file)}")
    if kept:
        _sh(c, s, f"cp -p {q(s.config_file)} {q(s.config_file)}.previous")
    _sh(c, s, f"mv -T {q(staged)} {q(s.config_file)}")
    return kept


def _restore_config(c: Connection, s: Settings) -> None:
    q = shlex.quote
    _ok(c, s, f"mv -T {q(s.config_file)}.previous {q(s.config_file)}")


def render_unit(s: Settings) -> str:
    """The unit file with this host's paths, user and arguments."""
    text = UNIT_TEMPLATE.read_text()
    args = s.run_args.format(config_file=s.config_file)
    lines = []
    for line in text.splitlines():
        if line.startswith("ExecStart="):
            line = f"ExecStart={s.root}/current/bin/{NAME} {args}"
        elif line.startswith(("User=", "Group=")) and s.user:
            line = line.split("=", 1)[0] + "=" + s.user
        lines.append(line)
    return "\n".join(lines) + "\n"


def _ensure_user(c: Connection, s: Settings) -> None:
    if not s.user:
        return
    q = shlex.quote(s.user)
    _sh(c, s, f"getent passwd {q} >/dev/null || useradd --system --user-group --home-dir"
              f" /var/lib/{NAME} --no-create-home --shell /usr/sbin/nologin {q}",
        f"creating the user {s.user}")


def _install_unit(c: Connection, s: Settings) -> None:
    q = shlex.quote
    unit = posixpath.join(s.unit_dir, f"{NAME}.service")
    with tempfile.NamedTemporaryFile("w", suffix=".service") as f:
        f.write(render_unit(s))
        f.flush()
        staged = unit + ".new"
        _put(c, s, f.name, staged)
    _sh(c, s, f"chmod 0644 {q(staged)} && mv -T {q(staged)} {q(unit)}"
              f" && systemctl daemon-reload && systemctl enable --quiet {NAME}",
        "installing the unit")


def _pidfile(s: Settings) -> str:
    return posixpath.join(s.run_dir, f"{NAME}.pid")


def _stop(c: Connection, s: Settings) -> None:
    if s.service == "systemd":
        _sh(c, s, f"systemctl stop {NAME}", "stopping the service")
        return
    _sh(c, s, f"start-stop-daemon --stop --quiet --oknodo --pidfile {shlex.quote(_pidfile(s))}"
              f" --remove-pidfile --retry TERM/{int(s.stop_timeout)}/KILL/5",
        "stopping the daemon", timeout=s.stop_timeout + 30)


def _restart(c: Connection, s: Settings) -> None:
    if s.service == "systemd":
        _sh(c, s, f"systemctl restart {NAME}", "restarting the service",
            timeout=s.stop_timeout + 60)
        return
    q = shlex.quote
    _stop(c, s)
    target = _readlink(c, s, posixpath.join(s.root, "current"))
    args = " ".join(q(a) for a in shlex.split(s.run_args.format(config_file=s.config_file)))
    chuid = f" --chuid {q(s.user)}" if s.user else ""
    _sh(c, s, f"mkdir -p {q(s.run_dir)} && start-stop-daemon --start --quiet --background"
              f" --make-pidfile --pidfile {q(_pidfile(s))} --chdir /{chuid}"
              f" --output {q(posixpath.join(s.run_dir, NAME + '.log'))}"
              f" --startas {q(target)}/bin/{NAME} -- {args}", "starting the daemon")


def _running_release(c: Connection, s: Settings) -> str:
    """The release directory of the running daemon's interpreter ("" when none runs)."""
    if s.service == "systemd":
        pid = _sh(c, s, f"systemctl show -p MainPID --value {NAME}").strip()
    else:
        pid = _sh(c, s, f"cat {shlex.quote(_pidfile(s))} 2>/dev/null || true").strip()
    if not pid.isdigit() or pid == "0":
        return ""
    argv = _sh(c, s, f"tr '\\0' '\\n' < /proc/{pid}/cmdline 2>/dev/null || true").splitlines()
    return posixpath.dirname(posixpath.dirname(argv[0])) if argv else ""


# Runs on the host with the release's Python: GET /streams until it answers 200 with JSON.
_HEALTH = r"""
import json, os, sys, time, tomllib, urllib.request
config, url, timeout, pidfile = sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4]
try:
    with open(config, "rb") as f:
        control = tomllib.load(f).get("control", {})
except FileNotFoundError:
    control = {}
token = control.get("token", "")
if not url:
    host, _, port = control.get("listen", "127.0.0.1:8089").rpartition(":")
    host = {"0.0.0.0": "127.0.0.1", "[::]": "[::1]", "": "127.0.0.1"}.get(host, host)
    url = f"http://{host}:{port}/streams"
headers = {"Authorization": f"Bearer {token}"} if token else {}
deadline, last = time.monotonic() + timeout, "no answer"
while time.monotonic() < deadline:
    if pidfile:  # a daemon that has exited will not answer: say so now
        try:
            with open(pidfile) as f:
                pid = int(f.read())
            with open(f"/proc/{pid}/stat") as f:
                gone = f.read().rpartition(")")[2].split()[0] == "Z"
        except (OSError, ValueError):
            gone = True
        if gone:
            print(f"the daemon has exited (see its log); {url}: {last}")
            sys.exit(1)
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=2) as r:
            streams = json.loads(r.read())
        print(f"{url}: 200, {len(streams)} streams")
        sys.exit(0)
    except Exception as exc:
        last = str(exc)
    time.sleep(0.25)
print(f"{url}: {last}")
sys.exit(1)
"""


def _health(c: Connection, s: Settings, timeout: float | None = None) -> tuple[bool, str]:
    """(answers, what it said): the daemon of `current` runs and answers GET /streams."""
    q = shlex.quote
    current = _readlink(c, s, posixpath.join(s.root, "current"))
    if not current:
        return False, "no current release"
    wait = s.health_timeout if timeout is None else timeout
    runner = c.sudo if s.sudo else c.run
    pidfile = _pidfile(s) if s.service == "pidfile" else ""
    r = runner(f"{q(current)}/bin/python -c {q(_HEALTH)} {q(s.config_file)} {q(s.health_url)}"
               f" {wait} {q(pidfile)}", hide=True, warn=True, in_stream=False,
               timeout=wait + 30)
    said = _tail(r.stdout) or _tail(r.stderr)
    if not r.ok:
        return False, said
    running = _running_release(c, s)
    if running != current:
        return False, f"{said}, but the daemon running is {running or 'none'}, not {current}"
    return True, said


def _activate(c: Connection, s: Settings, target: str, config_kept: bool | None = None) -> str:
    """Make `target` current, restart, check; on failure go back to what was current before and
    raise. `config_kept` is set when a new configuration was just put in place."""
    old = _readlink(c, s, posixpath.join(s.root, "current"))
    prev = _readlink(c, s, posixpath.join(s.root, "previous"))
    if old and old != target:  # first: until current moves, previous = current is harmless
        _switch(c, s, "previous", old)
    _switch(c, s, "current", target)
    _restart(c, s)
    ok, said = _health(c, s)
    if ok:
        return said
    name = posixpath.basename(target)
    if config_kept:
        _restore_config(c, s)
    if old == target:
        raise DeployError(f"{name} failed its health check ({said}); it already was the current"
                          " release: nothing was switched")
    if not old:
        _stop(c, s)
        _unlink(c, s, "current")
        raise DeployError(f"{name} failed its health check ({said}); no other release to go"
                          " back to: the service is stopped")
    _switch(c, s, "current", old)
    if prev:
        _switch(c, s, "previous", prev)
    else:
        _unlink(c, s, "previous")
    _restart(c, s)
    back, said_back = _health(c, s)
    raise DeployError(
        f"{name} failed its health check ({said}); switched back to {posixpath.basename(old)}"
        + ("" if back else f", which does not answer either ({said_back})"))


def _prune(c: Connection, s: Settings) -> None:
    q = shlex.quote
    releases = posixpath.join(s.root, "releases")
    names = _sh(c, s, f"ls -1t {q(releases)}").split()
    keep = {posixpath.basename(_readlink(c, s, posixpath.join(s.root, n)))
            for n in ("current", "previous")}
    keep.update(names[: max(s.keep, 2)])
    for name in names:
        if name not in keep:
            _sh(c, s, f"rm -rf {q(posixpath.join(releases, name))}")


# -- tasks ------------------------------------------------------------------------------------

@task
def build(c, out, source=str(PROJECT)):
    """Build a wheelhouse (the project, its dependencies, pip) into the empty directory OUT."""
    wh = build_wheelhouse(Path(out), Path(source))
    print(f"{wh.path}: {PACKAGE} {wh.version} for {wh.python_tag}, release {wh.release}")


@task(help={"config": "TOML configuration to install (default: the template, only where the"
                      " host has none)",
            "wheelhouse": "a wheelhouse from `fab build` (default: build one now)"})
def deploy(c, config="", wheelhouse=""):
    """Install a new release on each host, switch to it, restart, check; else switch back."""
    s = settings_for(c)
    wh, tar = _prepare(wheelhouse)
    _preflight(c, s, wh)
    target = posixpath.join(s.root, "releases", wh.release)
    if not _ok(c, s, f"test -e {shlex.quote(target)}/.installed"):
        _install_release(c, s, wh, tar, target)
    _ensure_user(c, s)
    staged, new_config = _install_config(c, s, config or s.config_source)
    try:
        _check_release(c, s, target, staged)
    except BaseException:
        if new_config:
            _ok(c, s, f"rm -f {shlex.quote(staged)}")
        raise
    if s.service == "systemd":
        _install_unit(c, s)
    kept = _put_config(c, s, staged) if new_config else None
    said = _activate(c, s, target, kept)
    _prune(c, s)
    return f"runs {wh.release} ({said})"


@task
def rollback(c):
    """Switch each host back to its previous release, restart, check."""
    s = settings_for(c)
    current = _readlink(c, s, posixpath.join(s.root, "current"))
    prev = _readlink(c, s, posixpath.join(s.root, "previous"))
    if not prev:
        raise DeployError("no previous release to roll back to")
    if not _ok(c, s, f"test -e {shlex.quote(prev)}/.installed"):
        raise DeployError(f"the previous release {prev} is not a complete install")
    said = _activate(c, s, prev)
    return f"rolled back from {posixpath.basename(current)}, runs {posixpath.basename(prev)}" \
           f" ({said})"


@task
def status(c):
    """Each host's current and previous release, the release running, and its health."""
    s = settings_for(c)
    current = posixpath.basename(_readlink(c, s, posixpath.join(s.root, "current")))
    prev = posixpath.basename(_readlink(c, s, posixpath.join(s.root, "previous")))
    running = posixpath.basename(_running_release(c, s))
    ok, said = _health(c, s, timeout=3.0) if current else (False, "nothing deployed")
    line = (f"current {current or '-'}, previous {prev or '-'}, running {running or '-'},"
            f" {'healthy' if ok else 'NOT healthy'}: {said}")
    if not ok:
        raise DeployError(line)
    return line


@task(help={"lines": "how many lines (default 50)"})
def logs(c, lines=50):
    """The daemon's last log lines on each host."""
    s = settings_for(c)
    if s.service == "systemd":
        out = _sh(c, s, f"journalctl -u {NAME} -n {int(lines)} --no-pager")
    else:
        out = _sh(c, s, f"tail -n {int(lines)} {shlex.quote(posixpath.join(s.run_dir, NAME))}.log")
    return "\n" + "\n".join(f"  {ln}" for ln in out.rstrip().splitlines())


# -- every host at once -----------------------------------------------------------------------

class ParallelExecutor(Executor):
    """`fab -H h1,h2,h3 TASK` runs TASK on all hosts at once, one thread each, then prints one
    outcome line per host; the run exits 1 when any host failed. Named as Fabric's executor in
    scripts/fabric.yaml (`tasks.executor_class`)."""

    def execute(self, *tasks):
        calls = self.expand_calls(self.normalize(tasks))
        results = {}
        i = 0
        while i < len(calls):
            group = [calls[i]]
            while (i + len(group) < len(calls) and isinstance(calls[i], ConnectionCall)
                   and calls[i + len(group)].task is calls[i].task
                   and isinstance(calls[i + len(group)], ConnectionCall)):
                group.append(calls[i + len(group)])
            i += len(group)
            self.config.load_collection(self.collection.configuration(group[0].called_as))
            self.config.load_shell_env()
            if not isinstance(group[0], ConnectionCall):
                call = group[0]
                results[call.task] = call.task(call.make_context(self.config), *call.args,
                                               **call.kwargs)
                continue
            results[group[0].task] = self._run_group(group)
        return results

    def _run_group(self, group: list[ConnectionCall]) -> dict[str, str]:
        name = group[0].task.name
        conns = [call.make_context(self.config.clone()) for call in group]

        def one(call: ConnectionCall, cxn: Connection) -> str:
            try:
                return str(call.task(cxn, *call.args, **call.kwargs))
            finally:
                cxn.close()

        outcomes: dict[str, str] = {}
        failed = []
        with concurrent.futures.ThreadPoolExecutor(max_workers=len(group)) as pool:
            futures = {pool.submit(one, call, cxn): cxn.original_host
                       for call, cxn in zip(group, conns, strict=True)}
            for future in concurrent.futures.as_completed(futures):
                host = futures[future]
                try:
                    outcomes[host] = future.result()
                    print(f"{host}: {name}: ok: {outcomes[host]}", flush=True)
                except Exception as exc:  # each host's failure is reported, not raised
                    failed.append(host)
                    why = str(exc) if isinstance(exc, DeployError) else \
                        f"{type(exc).__name__}: {exc}"
                    print(f"{host}: {name}: FAILED: {why}", flush=True)
        if failed:
            raise Exit(f"{name} failed on {len(failed)} of {len(group)} hosts:"
                       f" {', '.join(sorted(failed))}", code=1)
        return outcomes
