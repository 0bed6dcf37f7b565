"""scripts/_bootstrap.sh on machines other than this one (a bare Debian, an old Python, ...): the
real script, reached through the real scripts/demo, test and bench, run (mostly in its dry-run
mode) with a PATH made for each case. That PATH is one directory: symlinks to the few tools the
script uses, plus stubs for what the case has -- a python3 that answers the script's one probe,
a dpkg-query that knows which packages are installed, commands found or not. The scripts run in
a copy of the files they read, so the virtualenv they see is the case's, not this checkout's.
Nothing needs root, apt or the network. Last, .ci/run, with stub interpreters and a stub
scripts/test."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BASH = shutil.which("bash") or "/bin/bash"
# what the script runs, besides the stubs of each case
TOOLS = ("dirname", "cat", "sha1sum", "cut", "id", "head", "env")
HASHED = ("setup.cfg", "setup.py", "pyproject.toml", "esl_audio_stream/media/_speex_build.py",
          "esl_audio_stream/ws/_mask_build.py")  # the files whose hash stamps an installed venv
BUILD = ["libspeexdsp-dev", "gcc", "libc6-dev", "pkg-config"]
TEST_DEPS = ["chromium", "openssh-server", "openssh-client", "iproute2", "systemd"]
TEST_COMMANDS = ("chromium", "ssh-keygen", "ip", "systemd-analyze")
APT = "apt-get install --no-install-recommends: "


class Machine:
    """A checkout of the scripts and a PATH of one directory, which holds what this machine has."""

    def __init__(self, tmp: Path) -> None:
        self.root = tmp / "checkout"
        self.bin = tmp / "bin"
        self.bin.mkdir()
        scripts = (f"scripts/{s}" for s in ("_bootstrap.sh", "demo", "test", "bench"))
        for name in (*scripts, *HASHED):
            (self.root / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, self.root / name)
        for tool in TOOLS:
            found = shutil.which(tool)
            assert found, f"{tool} is not on this machine"
            (self.bin / tool).symlink_to(found)
        self.has_packages()

    def stub(self, path: Path, body: str) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.unlink(missing_ok=True)  # a symlink to a real tool: replaced, never written through
        path.write_text("#!/bin/sh\n" + body)
        path.chmod(0o755)

    def has_python(self, name: str = "python3", version: str = "3.13", venv: bool = True,
                   dev: bool = True) -> None:
        """An interpreter that answers the script's probe: its version, whether it has venv and
        ensurepip, whether its Python.h is there."""
        self.stub(self.bin / name, f"echo '{version} {int(venv)} {int(dev)}'\n")

    def has_real_python(self) -> None:
        """python3 is the interpreter running these tests: the probe's own code runs."""
        self.stub(self.bin / "python3", f'exec "{sys.executable}" "$@"\n')

    def has_packages(self, *packages: str) -> None:
        """dpkg-query -W -f='${Status}' PACKAGE, as dpkg answers it: installed, or unknown."""
        self.stub(self.bin / "dpkg-query",
                  'for p; do :; done\n'
                  f'case " {" ".join(packages)} " in *" $p "*) printf "install ok installed";;\n'
                  '  *) echo "dpkg-query: no packages found matching $p" >&2; exit 1;;\nesac\n')

    def has_commands(self, *names: str) -> None:
        for name in names:
            self.stub(self.bin / name, "exit 0\n")

    def has_everything(self) -> None:
        self.has_python()
        self.has_packages("libspeexdsp-dev", "libc6-dev", "openssh-server")
        self.has_commands("gcc", "pkg-config", *TEST_COMMANDS)

    def has_installed_venv(self, venv: str = ".venv") -> None:
        """A virtualenv whose python answers the version check and whose stamp is current."""
        bin_ = self.root / venv / "bin"
        self.stub(bin_ / "python", '[ "$1" = -c ] || echo "python $*"\n')  # -c: version check
        self.stub(bin_ / "ruff", 'echo "ruff $*"\n')
        self.stub(bin_ / "esl-audio-stream", 'echo "esl-audio-stream $*"\n')
        digest = hashlib.sha1(b"".join((self.root / f).read_bytes() for f in HASHED)).hexdigest()
        (self.root / venv / f".installed-{digest[:12]}").touch()

    def run(self, script: str, dry_run: bool = True, **env: str) -> subprocess.CompletedProcess:
        environ = {"PATH": str(self.bin), "HOME": str(self.root), "LANG": "C.UTF-8", **env}
        if dry_run:
            environ["EAS_BOOTSTRAP_DRY_RUN"] = "1"
        return subprocess.run([BASH, str(self.root / "scripts" / script)], env=environ,
                              capture_output=True, text=True, timeout=60)


def apt(done: subprocess.CompletedProcess) -> list[str]:
    """The packages the dry run would install (its one apt line)."""
    assert done.returncode == 0, done.stderr
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith(APT)]
    assert len(lines) == 1, done.stdout
    rest = lines[0].removeprefix(APT)
    return [] if rest == "(none)" else rest.split()


@pytest.fixture
def machine(tmp_path: Path) -> Machine:
    return Machine(tmp_path)


def test_bare_debian_gets_python3_and_the_build_tools(machine: Machine) -> None:
    """No python3 at all (a bare Debian image), nothing installed: python3 is installed with the
    rest, and its version is checked after."""
    done = machine.run("demo")
    assert apt(done) == ["python3", "python3-venv", "python3-dev", *BUILD]
    assert "then: refuse python3 if it is older than 3.11" in done.stdout
    assert "venv: .venv: create with python3, pip install -e .[test]" in done.stdout
    assert done.stderr == ""


def test_the_test_command_also_asks_for_what_the_tests_need(machine: Machine) -> None:
    assert apt(machine.run("test")) == ["python3", "python3-venv", "python3-dev", *BUILD,
                                        *TEST_DEPS]
    machine.has_everything()
    assert apt(machine.run("test")) == []


def test_nothing_to_install_when_everything_is_there(machine: Machine) -> None:
    machine.has_everything()
    done = machine.run("test")
    assert apt(done) == []
    assert "then:" not in done.stdout
    machine.has_installed_venv()
    assert machine.run("test").stdout.splitlines()[1] == "venv: .venv: up to date"


@pytest.mark.parametrize(("script", "ran"), [
    ("demo", ["esl-audio-stream demo"]),
    ("bench", ["esl-audio-stream bench"]),
    ("test", ["ruff check --quiet .",
              "python -m pytest -q -p no:cacheprovider -n 3 --dist loadfile"]),
])
def test_with_everything_there_it_is_quiet_and_the_script_runs(machine: Machine, script: str,
                                                               ran: list[str]) -> None:
    """Not a dry run: nothing is missing, so no apt-get (there is none on this PATH), no
    virtualenv made, not a word; the script goes straight to its work, in the virtualenv."""
    machine.has_everything()
    machine.has_installed_venv()
    done = machine.run(script, dry_run=False)
    assert (done.returncode, done.stdout.splitlines(), done.stderr) == (0, ran, "")


def test_the_real_interpreter_answers_the_probe(machine: Machine) -> None:
    """The probe's Python code, run by the interpreter running these tests (made by this very
    bootstrap, so it has venv, ensurepip and its headers): nothing to install for it."""
    machine.has_everything()
    machine.has_real_python()
    done = machine.run("test")
    assert apt(done) == []
    assert "venv: .venv: create with python3" in done.stdout


def test_python3_without_venv_and_headers(machine: Machine) -> None:
    """Debian's python3 without python3-venv (no ensurepip) nor python3-dev (no Python.h)."""
    machine.has_everything()
    machine.has_python(version="3.11", venv=False, dev=False)
    assert apt(machine.run("test")) == ["python3-venv", "python3-dev"]


def test_an_old_python_is_refused_before_anything_is_installed(machine: Machine) -> None:
    machine.has_python(version="3.9")
    done = machine.run("test")
    assert done.returncode == 1
    assert done.stdout == ""  # nothing would be installed for a Python that cannot run it
    assert done.stderr == ("esl-audio-stream needs Python 3.11 or newer; python3 is 3.9 "
                           "(set PYTHON=... to another interpreter)\n")
    machine.has_python("python3.13", version="3.13")
    assert apt(machine.run("demo", PYTHON="python3.13")) == BUILD  # ... which is the way out


def test_python_given_gets_its_own_venv_and_its_own_packages(machine: Machine) -> None:
    """PYTHON=python3.13: Debian's python3.13-venv/-dev if it lacks them, a .venv-py313 of its
    own (the default python3's .venv is left alone)."""
    machine.has_everything()
    machine.has_python("python3.13", version="3.13", venv=False, dev=False)
    done = machine.run("test", PYTHON="python3.13")
    assert apt(done) == ["python3.13-venv", "python3.13-dev"]
    assert "venv: .venv-py313: create with python3.13, pip install -e .[test]" in done.stdout
    machine.has_python("python3.13", version="3.13")
    machine.has_installed_venv(".venv-py313")
    done = machine.run("test", PYTHON="python3.13")
    assert done.stdout.splitlines() == [APT + "(none)", "venv: .venv-py313: up to date"]


def test_a_python_given_that_is_not_there_is_refused(machine: Machine) -> None:
    machine.has_everything()
    done = machine.run("test", PYTHON="python3.12")
    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr == "PYTHON=python3.12: no such interpreter\n"


def test_a_removed_package_counts_as_missing(machine: Machine, tmp_path: Path) -> None:
    """dpkg keeps a removed package's configuration ("deinstall ok config-files"): not
    installed, whatever `dpkg -s` exits with."""
    machine.has_everything()
    machine.stub(machine.bin / "dpkg-query",
                 'for p; do :; done\ncase "$p" in openssh-server) printf "deinstall ok '
                 'config-files";; *) printf "install ok installed";; esac\n')
    assert apt(machine.run("test")) == ["openssh-server"]


def test_installing_python3_comes_before_its_version_check(machine: Machine) -> None:
    """Not a dry run, as root, with an apt-get that records what it is asked and "installs"
    python3 -- one too old (Debian 11's 3.9): apt-get runs once, without recommends and without
    questions, then the installed python3 is refused with the clear line."""
    machine.stub(machine.bin / "id", "echo 0\n")
    log = machine.root / "apt.log"
    python3 = machine.bin / "python3"
    machine.stub(machine.bin / "apt-get",
                 f'echo "DEBIAN_FRONTEND=$DEBIAN_FRONTEND apt-get $*" >> {log}\n'
                 f'case " $* " in *" python3 "*) printf \'#!/bin/sh\\necho "3.9 1 1"\\n\' '
                 f'> {python3}; {shutil.which("chmod")} +x {python3};; esac\n')
    done = machine.run("demo", dry_run=False)
    assert done.returncode == 1
    wanted = " ".join(["python3", "python3-venv", "python3-dev", *BUILD])
    assert log.read_text().splitlines() == [
        "DEBIAN_FRONTEND= apt-get update -qq",
        f"DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends {wanted}",
    ]
    assert done.stderr.splitlines() == [
        f"installing {wanted} with apt-get",
        "esl-audio-stream needs Python 3.11 or newer; python3 is 3.9 "
        "(set PYTHON=... to another interpreter)",
    ]
    assert not (machine.root / ".venv").exists()


def test_not_root_and_no_sudo_says_so(machine: Machine) -> None:
    machine.stub(machine.bin / "id", "echo 1000\n")
    machine.has_python()
    done = machine.run("demo", dry_run=False)
    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr == f"needs {' '.join(BUILD)}: run as root, or install sudo\n"


# --------------------------------------------------------------------------- .ci/run


def ci(tmp: Path, *pythons: str, failing: str = "") -> subprocess.CompletedProcess:
    """.ci/run in a checkout whose scripts/test records how it was called (and fails under the
    interpreter named `failing`), on a PATH with these interpreters (stubs that run)."""
    machine = Machine(tmp)
    (machine.root / ".ci").mkdir()
    shutil.copy2(ROOT / ".ci" / "run", machine.root / ".ci" / "run")
    machine.stub(machine.root / "scripts" / "test",
                 'echo "scripts/test PYTHON=$PYTHON $*"\n'
                 f'case "$PYTHON" in *"{failing or "-"}") exit 1;; esac\n')
    for name in pythons:
        machine.stub(machine.bin / name, "exit 0\n")
    return subprocess.run([BASH, str(machine.root / ".ci" / "run"), "-x"], capture_output=True,
                          text=True, timeout=60,
                          env={"PATH": str(machine.bin), "HOME": str(tmp)})  # no ~/.pyenv


def test_ci_runs_the_test_command_under_both_interpreters(tmp_path: Path) -> None:
    done = ci(tmp_path, "python3.11", "python3.13", failing="python3.13")
    bin_ = tmp_path / "bin"
    assert done.stdout.splitlines() == [
        f"ci: Python 3.11 ({bin_}/python3.11): PYTHON={bin_}/python3.11 scripts/test",
        f"scripts/test PYTHON={bin_}/python3.11 -x",
        f"ci: Python 3.13 ({bin_}/python3.13): PYTHON={bin_}/python3.13 scripts/test",
        f"scripts/test PYTHON={bin_}/python3.13 -x",
        "ci: passed: 3.11; failed: 3.13",
    ]
    assert done.returncode == 1  # one run failed: CI fails, after running both


def test_ci_skips_an_interpreter_the_machine_lacks(tmp_path: Path) -> None:
    """Only what .ci/run can find: PATH (here, the stubs), /usr/bin, /usr/local/bin, ~/.pyenv."""
    absent = [v for v in ("3.11", "3.13") if not any(
        os.access(f"{d}/python{v}", os.X_OK) for d in ("/usr/bin", "/usr/local/bin"))]
    if not absent:
        pytest.skip("this machine has python3.11 and python3.13 where .ci/run looks")
    there = "3.13" if absent[0] == "3.11" else "3.11"
    done = ci(tmp_path, f"python{there}")
    assert f"ci: skipping Python {absent[0]}: no python{absent[0]} on this machine" in \
        done.stdout.splitlines()
    assert f"scripts/test PYTHON={tmp_path}/bin/python{there} -x" in done.stdout.splitlines()
    assert done.stdout.splitlines()[-1] == f"ci: passed: {there}; failed: none"
    assert done.returncode == 0
