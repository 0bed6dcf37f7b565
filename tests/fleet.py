"""Test hosts for the deployment: real OpenSSH servers reached with a key made at test time.

Each host is a network namespace of its own (a veth pair to it, its own address in 10.231.X.0/24,
its own loopback) running `/usr/sbin/sshd -D` with its own host key. Where namespaces cannot be
made (no CAP_NET_ADMIN), or made but not used (in a chroot that is not a mount point, `ip netns
add` works but `ip -n NS ...` and `ip netns exec` exit 255: their `mount --make-rslave /` is
refused), the hosts are sshd on loopback ports instead, and `why_not_netns` says why. The hosts
share this machine's filesystem, so the deployment gives each its own directories (settings per
host).
`stop()` ends everything started here -- daemons the deployment started, sshd, namespaces --
and is safe to call after any failure.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

SSHD = "/usr/sbin/sshd"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(argv: list[str], timeout: float = 15.0, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=check)


class NetnsUnusable(Exception):
    """A step of making a host's namespace failed: the fleet uses loopback hosts instead."""


def netns_steps(ns: str, veth: str, outside: str, inside: str) -> list[list[str]]:
    """What making a host's namespace takes: the namespace, a veth pair into it (eth0 inside),
    an address at each end, the links up, and a command run inside it (as sshd will be)."""
    return [
        ["ip", "netns", "add", ns],
        ["ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns],
        ["ip", "addr", "add", f"{outside}/30", "dev", veth],
        ["ip", "link", "set", veth, "up"],
        ["ip", "-n", ns, "addr", "add", f"{inside}/30", "dev", "eth0"],
        ["ip", "-n", ns, "link", "set", "eth0", "up"],
        ["ip", "-n", ns, "link", "set", "lo", "up"],
        ["ip", "netns", "exec", ns, "true"],
    ]


def netns_step(argv: list[str]) -> None:
    """Run one of netns_steps(); NetnsUnusable (saying which, and what ip said) if it fails."""
    done = _run(argv, check=False)
    if done.returncode:
        raise NetnsUnusable(f"`{' '.join(argv)}` exited {done.returncode}: "
                            f"{done.stderr.strip() or '(nothing on stderr)'}")


def remove_netns(ns: str, veth: str) -> None:
    """Remove what netns_steps() made (either may be missing): the veth pair, the namespace."""
    if veth:
        _run(["ip", "link", "del", veth], check=False)
    _run(["ip", "netns", "del", ns], check=False)


def _subnet() -> str:
    return f"10.231.{100 + os.getpid() % 150}"  # two test runs at once use different subnets


def can_make_netns() -> tuple[bool, str]:
    """Whether this process can make a host's namespace as Fleet does (every step of it, in the
    first /30 of this run's subnet, which no host uses), and why not. Removes what it made."""
    if not shutil.which("ip"):
        return False, "no `ip` command (iproute2)"
    ns, veth = f"easprobe{os.getpid()}", f"easpv{os.getpid()}"
    try:
        for argv in netns_steps(ns, veth, f"{_subnet()}.1", f"{_subnet()}.2"):
            netns_step(argv)
    except NetnsUnusable as exc:
        return False, str(exc)
    finally:
        remove_netns(ns, veth)
    return True, ""


@dataclass
class Host:
    name: str
    base: Path  # this host's own directory
    address: str
    port: int
    netns: str | None = None
    veth: str | None = None
    #: The address this machine has towards the host (its veth end; loopback without one):
    #: what a service the host must reach listens on.
    outside: str = "127.0.0.1"
    sshd: subprocess.Popen | None = None
    log: Path = field(init=False)

    def __post_init__(self) -> None:
        self.log = self.base / "sshd.log"

    def argv(self, argv: list[str]) -> list[str]:
        """`argv` run on this host: inside its namespace, if it has one."""
        return ["ip", "netns", "exec", self.netns, *argv] if self.netns else argv


class Fleet:
    """`count` SSH hosts named h1..hN; `ssh_config` is a file Fabric (`fab -S`) can use."""

    def __init__(self, tmp: Path, count: int = 3, use_netns: bool | None = None) -> None:
        self.tmp = tmp
        self.count = count
        if use_netns is None:
            use_netns, self.why_not_netns = can_make_netns()
        else:
            self.why_not_netns = "" if use_netns else "asked for loopback hosts"
        self.use_netns = use_netns
        self.hosts: list[Host] = []
        self.key = tmp / "client_key"
        self.ssh_config = tmp / "ssh_config"
        tag = os.getpid() % 100000
        self._prefix = f"eas{tag}"
        self._subnet = _subnet()

    def start(self) -> Fleet:
        if not os.path.exists(SSHD):
            raise RuntimeError(f"{SSHD} is missing: apt-get install openssh-server")
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # sshd's privilege separation dir
        _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "eas-deploy-test", "-f",
              str(self.key)])
        authorized = self.tmp / "authorized_keys"
        authorized.write_text(self.key.with_suffix(".pub").read_text())
        authorized.chmod(0o600)
        try:
            try:
                self._start_hosts()
            except NetnsUnusable as exc:
                # Namespaces can be made here but a later step is refused: remove what was made,
                # then the hosts as where namespaces cannot be made at all.
                self.stop()
                for n in range(1, self.count + 1):
                    shutil.rmtree(self.tmp / f"h{n}", ignore_errors=True)
                self.use_netns, self.why_not_netns = False, str(exc)
                self._start_hosts()
        except BaseException:
            self.stop()
            raise
        self.ssh_config.write_text("".join(
            f"Host {h.name}\n  HostName {h.address}\n  Port {h.port}\n  User root\n"
            f"  IdentityFile {self.key}\n  IdentitiesOnly yes\n" for h in self.hosts))
        return self

    def _start_hosts(self) -> None:
        for n in range(1, self.count + 1):
            self._start_host(n)
        for host in self.hosts:
            self._wait_ssh(host)

    def _start_host(self, n: int) -> None:
        base = self.tmp / f"h{n}"
        base.mkdir()
        if self.use_netns:
            ns, veth = f"{self._prefix}h{n}", f"{self._prefix}v{n}"
            outside, inside = f"{self._subnet}.{4 * n + 1}", f"{self._subnet}.{4 * n + 2}"
            host = Host(f"h{n}", base, inside, 22, outside=outside)
            first, *rest = netns_steps(ns, veth, outside, inside)
            self.netns_step(first)
            host.netns, host.veth = ns, veth
            self.hosts.append(host)  # from here on, stop() removes it
            for argv in rest:
                self.netns_step(argv)
        else:
            host = Host(f"h{n}", base, "127.0.0.1", free_port())
            self.hosts.append(host)
        _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f",
              str(base / "ssh_host_ed25519_key")])
        config = base / "sshd_config"
        config.write_text(
            f"Port {host.port}\nListenAddress {host.address}\n"
            f"HostKey {base}/ssh_host_ed25519_key\nPidFile {base}/sshd.pid\n"
            f"AuthorizedKeysFile {self.tmp}/authorized_keys\n"
            "PermitRootLogin prohibit-password\nPubkeyAuthentication yes\n"
            "PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\n"
            "StrictModes no\nPrintMotd no\nSubsystem sftp internal-sftp\nLogLevel INFO\n")
        host.sshd = subprocess.Popen(host.argv([SSHD, "-D", "-e", "-f", str(config)]),
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=open(host.log, "w"))  # noqa: SIM115

    def netns_step(self, argv: list[str]) -> None:
        """One step of making a host's namespace (a method: a test makes one fail)."""
        netns_step(argv)

    def _wait_ssh(self, host: Host, timeout: float = 10.0) -> None:
        """Until the host's sshd answers with its banner."""
        probe = ("import socket,sys\ns=socket.create_connection((sys.argv[1],int(sys.argv[2])),1)\n"
                 "s.settimeout(1)\nsys.exit(0 if s.recv(8).startswith(b'SSH-') else 1)")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if host.sshd.poll() is not None:
                raise RuntimeError(f"sshd of {host.name} exited: {host.log.read_text()[-500:]}")
            if _run(host.argv(["python3", "-c", probe, host.address, str(host.port)]),
                    check=False).returncode == 0:
                return
            time.sleep(0.1)
        raise RuntimeError(f"sshd of {host.name} does not answer: {host.log.read_text()[-500:]}")

    def stop(self) -> None:
        """End every process of the hosts (the deployed daemons first), then sshd, then the
        namespaces. Never raises."""
        for host in self.hosts:
            pids = set()
            for pidfile in host.base.rglob("*.pid"):
                if pidfile.name != "sshd.pid":
                    text = pidfile.read_text().strip()
                    if text.isdigit():
                        pids.add(int(text))
            if host.netns:
                listed = _run(["ip", "netns", "pids", host.netns], check=False).stdout.split()
                pids.update(int(p) for p in listed if p.isdigit())
            if host.sshd:
                pids.discard(host.sshd.pid)
            _kill(pids)
            if host.sshd and host.sshd.poll() is None:
                host.sshd.terminate()
                try:
                    host.sshd.wait(5)
                except subprocess.TimeoutExpired:
                    host.sshd.kill()
                    host.sshd.wait(5)
            if host.netns:
                remove_netns(host.netns, host.veth or "")
        self.hosts = []


def _kill(pids: set[int], grace: float = 5.0) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while pids and time.monotonic() < deadline:
        pids = {p for p in pids if _alive(p)}
        time.sleep(0.05)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie (not our child, its parent not reaping yet) counts as gone
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[-1][0] != "Z"
    except OSError:
        return False
