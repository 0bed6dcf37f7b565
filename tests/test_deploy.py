"""The deployment as an operator runs it: the systemd unit checked by systemd-analyze, and
`fab -H h1,h2,h3 deploy | rollback | status | logs` against three real sshd hosts (network
namespaces, or loopback ports where namespaces cannot be made), the service started with
start-stop-daemon (the hosts have no systemd)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import wait_until
from fleet import Fleet, NetnsUnusable, can_make_netns, free_port
from wspeer import WSPeer

from esl_audio_stream.app import events
from esl_audio_stream.esl.connection import ESLConnection

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = ROOT / "scripts"
FAB = str(Path(sys.executable).parent / "fab")
sys.path.insert(0, str(SCRIPTS))

import fabfile  # noqa: E402

UNIT = SCRIPTS / "systemd" / "esl-audio-stream.service"


def _unit_settings(text: str) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for line in text.splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, value = line.split("=", 1)
            found.setdefault(key, []).append(value)
    return found


def test_unit_file(tmp_path):
    """The unit as shipped says what production needs, and systemd-analyze finds nothing wrong
    with it once rendered for a host (paths that exist here)."""
    unit = _unit_settings(UNIT.read_text())
    assert unit["User"] == ["esl-audio-stream"] and unit["Restart"] == ["on-failure"]
    assert unit["KillSignal"] == ["SIGTERM"]
    drain = fabfile.Settings().stop_timeout
    assert int(unit["TimeoutStopSec"][0]) >= drain > 10.0  # 10 s: streams.drain_timeout default
    for hardening in ("NoNewPrivileges", "PrivateTmp", "ProtectHome", "PrivateDevices"):
        assert unit[hardening] == ["yes"], hardening
    assert unit["ProtectSystem"] == ["strict"]
    assert "esl-audio-stream/files" in unit["StateDirectory"][0].split()
    assert unit["ExecStart"][0].endswith(
        "/current/bin/esl-audio-stream run --config /etc/esl-audio-stream/config.toml")

    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed (Debian package systemd)")
    release = tmp_path / "opt" / "releases" / "r1" / "bin"
    release.mkdir(parents=True)
    (release / "esl-audio-stream").write_text("#!/bin/sh\n")
    (release / "esl-audio-stream").chmod(0o755)
    (tmp_path / "opt" / "current").symlink_to(release.parent)
    s = fabfile.Settings(root=str(tmp_path / "opt"), config_file=str(tmp_path / "config.toml"))
    rendered = fabfile.render_unit(s)
    assert f"ExecStart={tmp_path}/opt/current/bin/esl-audio-stream run --config" in rendered
    (tmp_path / "unit").mkdir()
    path = tmp_path / "unit" / "esl-audio-stream.service"
    path.write_text(rendered)
    done = subprocess.run([analyze, "verify", str(path)], capture_output=True, text=True,
                          timeout=60)
    assert (done.returncode, done.stderr.strip()) == (0, "")

    path.write_text(rendered.replace("Restart=on-failure", "Restart=on-failure\nRestrat=no"))
    bad = subprocess.run([analyze, "verify", str(path)], capture_output=True, text=True,
                         timeout=60)
    assert "Unknown key" in bad.stderr  # it does read the file


def test_config_template_is_accepted():
    """The template a deploy installs where a host has none is one the daemon starts with, and
    its files_dir is the unit's state directory, not /tmp (hidden by PrivateTmp=)."""
    template = SCRIPTS / "deploy" / "config.toml"
    done = subprocess.run([sys.executable, "-m", "esl_audio_stream.cli", "config", "--check",
                           str(template)], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert 'files_dir = "/var/lib/esl-audio-stream/files"' in done.stdout
    assert "change-me" not in done.stdout  # the password is masked


def _copy_source(dst: Path, version: str) -> None:
    """This checkout's source with another version number (the second release)."""
    shutil.copytree(ROOT, dst, ignore=shutil.ignore_patterns(
        ".git", ".venv", ".venv-*", "build", "dist", "*.egg-info", "__pycache__", "*.so",
        "demo-out", "bench-out", ".pytest_cache", ".ruff_cache", "_speexdsp.c", "_mask.c"))
    cfg = dst / "setup.cfg"
    cfg.write_text(re.sub(r"(?m)^version = .*$", f"version = {version}", cfg.read_text()))


def _yaml(data: dict) -> str:
    return json.dumps(data)  # YAML is a superset of JSON


def _netns_leftovers(*prefixes: str) -> list[str]:
    """Namespaces and links on this machine whose names start with one of `prefixes`."""
    names = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True,
                           timeout=15).stdout.split()
    links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True,
                           timeout=15).stdout.splitlines()
    names += [ln.split(":")[1].strip().split("@")[0] for ln in links if ":" in ln]
    return [n for n in names if n.startswith(prefixes)]


@pytest.mark.skipif(shutil.which("ip") is None, reason="no `ip` command (Debian package iproute2)")
def test_netns_probe_makes_a_whole_host_and_removes_it():
    """can_make_netns() goes through every step a host's namespace takes (so a machine where
    `ip netns add` works but the next steps do not is found out), and leaves nothing behind."""
    ok, why = can_make_netns()
    assert ok == (why == "")
    if not ok:
        assert why.startswith("`ip "), why  # which step, and what ip said
    assert _netns_leftovers(f"easprobe{os.getpid()}", f"easpv{os.getpid()}") == []


class ChrootFleet(Fleet):
    """A fleet as in a chroot that is not a mount point: `ip netns add` and the veth work, but
    `ip -n NS ...` (and `ip netns exec`) exit 255, their `mount --make-rslave /` refused."""

    def netns_step(self, argv: list[str]) -> None:
        if argv[:2] == ["ip", "-n"]:
            raise NetnsUnusable(f"`{' '.join(argv)}` exited 255: \"mount --make-rslave /\" "
                                "failed: Invalid argument")
        super().netns_step(argv)


def test_fleet_falls_back_to_loopback_when_a_namespace_step_fails(tmp_path):
    """The namespace made for h1 (and its veth) is removed, the hosts are sshd on loopback ports,
    `why_not_netns` names the step, and ssh reaches every host. (Where namespaces cannot be made
    at all, `ip netns add` is the step that fails: the same fallback.)"""
    f = ChrootFleet(tmp_path, count=2, use_netns=True)
    f.start()
    hosts = list(f.hosts)
    try:
        assert not f.use_netns
        assert "exited" in f.why_not_netns and f.why_not_netns.startswith("`ip "), f.why_not_netns
        assert [(h.name, h.address, h.netns) for h in f.hosts] == [
            ("h1", "127.0.0.1", None), ("h2", "127.0.0.1", None)]
        assert _netns_leftovers(f"{f._prefix}h", f"{f._prefix}v") == []
        for h in f.hosts:
            done = subprocess.run(
                ["ssh", "-F", str(f.ssh_config), "-o", "BatchMode=yes", "-o",
                 "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", h.name,
                 "echo", "on", h.name], capture_output=True, text=True, timeout=60)
            assert (done.returncode, done.stdout) == (0, f"on {h.name}\n"), done.stderr
    finally:
        f.stop()
    assert [h.sshd.poll() is not None for h in hosts] == [True, True]  # stop() ended them


class HostCalls:
    """A FreeSWITCH (the simulator, a process on the host: in its namespace, on 0.0.0.0 so this
    machine reaches it too), calls auto-started on it, and the endpoint they stream to (on this
    machine's address towards the host)."""

    def __init__(self, h, esl_port: int, password: str) -> None:
        self.h = h
        self.esl_port = esl_port
        bind = "0.0.0.0" if h.netns else "127.0.0.1"
        self.log = open(h.base / "sim.log", "w")  # noqa: SIM115
        self.sim = subprocess.Popen(h.argv([
            sys.executable, "-m", "esl_audio_stream.cli", "simulate", "--esl",
            f"{bind}:{esl_port}", "--password", password, "--extension", "1000=tone:440"]),
            stdout=subprocess.DEVNULL, stderr=self.log)
        self.peer = WSPeer(host=h.outside).start()
        self.esl = ESLConnection(h.address, esl_port, password, backoff_max=0.5,
                                 on_event=self._seen)
        self.seen: list = []
        self.esl.subscribe("CUSTOM", events.DISCONNECT)
        self.esl.start()
        assert self.esl.wait_connected(15), (h.base / "sim.log").read_text()
        self.paths: dict[str, str] = {}

    def _seen(self, event) -> None:
        self.seen.append(event)

    def call(self, n: int, mix: str) -> None:
        """A parked call the daemon auto-starts (mono: direct; stereo: through taps, asked for:
        `auto` streams a parked call directly)."""
        path = f"/{self.h.name}-{n}"
        url = f"ws://{self.h.outside}:{self.peer.port}{path}"
        source = "taps" if mix == "stereo" else "auto"
        answer = self.esl.api(
            f"originate {{AUDIO_STREAM_URL={url},AUDIO_STREAM_MIX={mix},AUDIO_STREAM_RATE=8k,"
            f"AUDIO_STREAM_METADATA=M{path},STREAM_SOURCE={source}}}loopback/1000/default "
            "&park()")
        assert answer.startswith("+OK "), answer
        self.paths[answer.split()[1]] = path

    def conns(self, path: str) -> list:
        return [c for c in self.peer.connections if c.path == path]

    def streaming(self, generation: int) -> bool:
        """Every call's `generation`-th connection (1: the first) has its metadata and audio."""
        return all(len(c := self.conns(p)) >= generation and c[generation - 1].messages
                   and c[generation - 1].messages[0] == f"M{p}"
                   and len(c[generation - 1].binary) > 3 for p in self.paths.values())

    def close(self) -> None:
        self.esl.stop()
        self.peer.stop()
        self.sim.kill()
        self.sim.wait(10)
        self.log.close()


@pytest.fixture
def fleet(tmp_path):
    (tmp_path / "fleet").mkdir()
    # EAS_DEPLOY_TEST_LOOPBACK=1: the hosts as where namespaces cannot be made (no CAP_NET_ADMIN)
    loopback = os.environ.get("EAS_DEPLOY_TEST_LOOPBACK") == "1"
    f = Fleet(tmp_path / "fleet", use_netns=False if loopback else None)
    f.start()  # stops what it started if it fails
    try:
        yield f
    finally:
        f.stop()


def test_fleet_deploy_rollback_and_a_failing_host(fleet, tmp_path, capsys):
    kind = ("network namespaces" if fleet.use_netns else
            f"sshd on loopback ports, no network namespaces: {fleet.why_not_netns}")
    with capsys.disabled():
        print(f"\n[test_deploy] the hosts are {kind} ", end="")
    # Two wheelhouses, built at once: this checkout, and a copy with another version.
    wh1, wh2 = tmp_path / "wh1", tmp_path / "wh2"
    _copy_source(tmp_path / "src2", "0.1.0.post2")
    builds = [subprocess.Popen([FAB, "-r", str(SCRIPTS), "build", "--out", str(out), "--source",
                                str(src)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True, cwd=tmp_path)
              for out, src in ((wh1, ROOT), (wh2, tmp_path / "src2"))]
    for b in builds:
        out, _ = b.communicate(timeout=300)
        assert b.returncode == 0, out
    v1, v2 = fabfile.read_wheelhouse(wh1).release, fabfile.read_wheelhouse(wh2).release
    assert v1 != v2 and v2.startswith("0.1.0.post2-")

    hosts, per_host, configs, esls = fleet.hosts, {}, {}, {}
    # The hosts' Python is the one running this suite, which `fab build` made the wheels for:
    # their python3 may be another version (Debian 12's 3.11 when the suite runs under 3.13).
    python = os.path.realpath(sys.executable)
    for h in hosts:
        control = 8089 if h.netns else free_port()  # each namespace has its own loopback
        esl = esls[h.name] = 8021 if h.netns else free_port()  # the host's simulator
        configs[h.name] = h.base / "config.toml"
        configs[h.name].write_text(
            f'[esl]\nhost = "127.0.0.1"\nport = {esl}\npassword = "test-secret"\n'
            f'[control]\nlisten = "127.0.0.1:{control}"\n'
            f'[playback]\nfiles_dir = "{h.base}/files"\n')
        per_host[h.name] = {"root": f"{h.base}/opt", "config_file": f"{h.base}/etc/config.toml",
                            "run_dir": f"{h.base}/run", "config_source": str(configs[h.name]),
                            "python": python}
    settings = {"service": "pidfile", "user": "", "health_timeout": 20, "stop_timeout": 15,
                "hosts": per_host}
    runtime = tmp_path / "fabric-test.yaml"
    runtime.write_text(_yaml({"deploy": settings, "timeouts": {"connect": 10}}))

    def fab(*args: str, yaml: Path = runtime) -> subprocess.CompletedProcess:
        return subprocess.run([FAB, "-r", str(SCRIPTS), "-S", str(fleet.ssh_config), "-f",
                               str(yaml), "-H", ",".join(h.name for h in hosts), *args],
                              capture_output=True, text=True, timeout=240, cwd=tmp_path,
                              env={"PATH": "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin",
                                   "HOME": str(tmp_path)})

    def esl_up(h) -> bool:
        """The host's daemon reached its FreeSWITCH (its /metrics says so)."""
        control = re.search(r'listen = "([^"]+)"', configs[h.name].read_text()).group(1)
        probe = ("import sys,urllib.request\n"
                 "r=urllib.request.urlopen(f'http://{sys.argv[1]}/metrics',timeout=5)\n"
                 "up=[l.split()[-1] for l in r.read().decode().splitlines()"
                 " if l.startswith('esl_audio_stream_esl_connected')]\n"
                 "print(bool(up) and all(v == '1.0' for v in up))")  # each worker's, if any
        done = subprocess.run(h.argv([sys.executable, "-c", probe, control]),
                              capture_output=True, text=True, timeout=30)
        return done.returncode == 0 and done.stdout.strip() == "True"

    def answers(h) -> bool:
        control = re.search(r'listen = "([^"]+)"', configs[h.name].read_text()).group(1)
        probe = ("import json,sys,urllib.request\n"
                 "r=urllib.request.urlopen(f'http://{sys.argv[1]}/streams',timeout=5)\n"
                 "print(r.status, type(json.loads(r.read())).__name__)")
        done = subprocess.run(h.argv([sys.executable, "-c", probe, control]),
                              capture_output=True, text=True, timeout=30)
        return done.returncode == 0 and done.stdout.split()[0] == "200"

    def running(h) -> str:
        """The release directory the host's daemon runs from (its interpreter's path)."""
        pid = (h.base / "run" / "esl-audio-stream.pid").read_text().strip()
        argv0 = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode()
        return Path(argv0).parent.parent.name

    def link(h, name: str) -> str:
        return Path(h.base / "opt" / name).readlink().name

    def outcome(result, host: str) -> str:
        lines = [ln for ln in result.stdout.splitlines() if ln.startswith(f"{host}: ")]
        assert len(lines) == 1, result.stdout + result.stderr
        return lines[0]

    # 1. first deploy: every host installs, starts and answers; each has a FreeSWITCH (the
    # simulator) with two calls streaming, auto-started (one direct, one through taps)
    calls = {h.name: HostCalls(h, esls[h.name], "test-secret") for h in hosts}
    try:
        first = fab("deploy", "--wheelhouse", str(wh1))
        assert first.returncode == 0, first.stdout + first.stderr
        for h in hosts:
            assert outcome(first, h.name).startswith(f"{h.name}: deploy: ok: runs {v1} (")
            assert answers(h) and running(h) == v1 == link(h, "current")
            assert not (h.base / "opt" / "previous").exists()
            assert wait_until(lambda h=h: esl_up(h), 15)
            calls[h.name].call(0, "mono")
            calls[h.name].call(1, "stereo")
        for c in calls.values():
            assert wait_until(lambda c=c: c.streaming(1), 10)

        # 2. second version: every host switches, the first is kept as previous; the restart
        # hands the streams over: none ends, each is carried on by the new process
        second = fab("deploy", "--wheelhouse", str(wh2))
        deployed = time.monotonic()
        assert second.returncode == 0, second.stdout + second.stderr
        for h in hosts:
            assert f"ok: runs {v2}" in outcome(second, h.name)
            assert answers(h) and running(h) == v2 == link(h, "current")
            assert link(h, "previous") == v1
        assert all(wait_until(lambda c=c: c.streaming(2), 5) for c in calls.values())
        with capsys.disabled():
            print(f"streams carried on {time.monotonic() - deployed:.2f} s after the deploy "
                  "returned ", end="")

        # 3. rollback: the first version runs again; the streams go on again
        back = fab("rollback")
        assert back.returncode == 0, back.stdout + back.stderr
        for h in hosts:
            assert f"ok: rolled back from {v2}, runs {v1}" in outcome(back, h.name)
            assert answers(h) and running(h) == v1 == link(h, "current")
            assert link(h, "previous") == v2
        assert all(wait_until(lambda c=c: c.streaming(3), 5) for c in calls.values())
        for c in calls.values():  # no stream ended: no disconnect event, every call still up
            assert not [e for e in c.seen if e.subclass == events.DISCONNECT]
            assert all(c.esl.api(f"uuid_exists {u}") == "true" for u in c.paths)
    finally:
        for c in calls.values():
            c.close()

    # 4. the second version again, but on h2 it crashes at start (its installed copy of v2 is
    # made to), and h3 lacks its Python: both are reported failed and stay on the first
    # version; h1 switches
    h1, h2, h3 = hosts
    daemon = h2.base / "opt" / "releases" / v2 / "bin" / "esl-audio-stream"
    daemon.rename(daemon.with_name("esl-audio-stream.real"))
    daemon.write_text(f"#!/bin/sh\n"
                      f'if [ "$1" = run ] && [ "$2" != --help ]; then\n'
                      f'  echo "esl-audio-stream: crashed at start (test)" >&2; exit 1\nfi\n'
                      f'exec {daemon}.real "$@"\n')
    daemon.chmod(0o755)
    broken = dict(settings, hosts={
        **per_host, "h2": {**per_host["h2"], "health_timeout": 8},
        "h3": {**per_host["h3"], "python": "/nonexistent/python3"}})
    broken_yaml = tmp_path / "fabric-broken.yaml"
    broken_yaml.write_text(_yaml({"deploy": broken, "timeouts": {"connect": 10}}))
    mixed = fab("deploy", "--wheelhouse", str(wh2), yaml=broken_yaml)
    assert mixed.returncode == 1, mixed.stdout + mixed.stderr
    assert "deploy failed on 2 of 3 hosts: h2, h3" in mixed.stderr
    assert f"h1: deploy: ok: runs {v2}" in outcome(mixed, "h1")
    h2_line = outcome(mixed, "h2")
    assert f"h2: deploy: FAILED: {v2} failed its health check" in h2_line
    assert h2_line.endswith(f"switched back to {v1}")
    assert "h3: deploy: FAILED: /nonexistent/python3 does not run on this host" in \
        outcome(mixed, "h3")
    assert answers(h1) and running(h1) == v2 == link(h1, "current")
    for h in (h2, h3):
        assert answers(h) and running(h) == v1 == link(h, "current")
        assert link(h, "previous") == v2

    # 5. status and logs, per host
    st = fab("status")
    assert st.returncode == 0, st.stdout + st.stderr
    assert f"h1: status: ok: current {v2}, previous {v1}, running {v2}, healthy" in \
        outcome(st, "h1")
    assert f"h2: status: ok: current {v1}, previous {v2}, running {v1}, healthy" in \
        outcome(st, "h2")
    logs = fab("logs", "--lines", "200")
    assert logs.returncode == 0, logs.stdout + logs.stderr
    # three starts a host at least (a supervisor's line names its workers)
    assert len(re.findall(r"running: (?:\d+ workers, )?ESL 127\.0\.0\.1:", logs.stdout)) >= 3 * 3
    assert "test-secret" not in logs.stdout

    # 6. a configuration the release refuses changes nothing on the host
    bad = tmp_path / "bad.toml"
    bad.write_text(configs["h1"].read_text().replace("password =", "pasword ="))
    installed = (h1.base / "etc" / "config.toml").read_text()
    refused = fab("deploy", "--wheelhouse", str(wh1), "--config", str(bad))
    assert refused.returncode == 1
    for h in hosts:
        assert f"{h.name}: deploy: FAILED: the configuration is refused: " in outcome(refused,
                                                                                     h.name)
    assert "pasword" in outcome(refused, "h1")
    assert (h1.base / "etc" / "config.toml").read_text() == installed
    assert not (h1.base / "etc" / "config.toml.new").exists()
    assert answers(h1) and running(h1) == v2 == link(h1, "current")
