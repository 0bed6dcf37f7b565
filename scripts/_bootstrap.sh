# Sourced by scripts/demo, scripts/test and scripts/bench: makes this checkout runnable on a fresh
# Debian machine (apt packages, python3 included; a virtualenv; the package with its test extras),
# doing only what is missing and saying nothing when nothing is.
#
#   PYTHON=python3.13     the interpreter to use (default python3); each has its own virtualenv:
#                         .venv for the default, .venv-pyXY for PYTHON=... (XY: its version), so
#                         the suite can run under two interpreters in turn without reinstalling
#   EAS_TEST_DEPS=1       also what only the tests need (scripts/test sets it)
#   EAS_BOOTSTRAP_DRY_RUN=1  print what would be done, do nothing, exit 0 (no root, no apt)
#
# Sets VENV (the virtualenv's directory, relative to the checkout) for the script that sources it.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

DRY_RUN="${EAS_BOOTSTRAP_DRY_RUN:-}"
PY="${PYTHON:-python3}"
need_apt=()
# No recommends: on a bare Debian they pull in daemons (avahi, polkit, ...) that nothing here uses.
apt_opts=(--no-install-recommends)

installed() {  # a Debian package is installed (not merely known, nor removed with its config left)
  [ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null)" = "install ok installed" ]
}
need_cmd() {  # need_cmd COMMAND PACKAGE
  command -v "$1" >/dev/null 2>&1 || need_apt+=("$2")
}
too_old() {
  echo "esl-audio-stream needs Python 3.11 or newer; $PY is $1" \
    "(set PYTHON=... to another interpreter)" >&2
  exit 1
}
does_not_run() {
  echo "$PY is there but does not run: $("$PY" -c '' 2>&1 | head -1)" >&2
  exit 1
}
# One interpreter start tells all: "<major.minor> <venv and ensurepip: 0|1> <Python.h: 0|1>".
# Debian ships ensurepip in python3.X-venv and Python.h in libpython3.X-dev.
PROBE='import os, sys, sysconfig
try:
    import ensurepip, venv
    v = 1
except ImportError:
    v = 0
h = os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h"))
sys.stdout.write("%d.%d %d %d\n" % (sys.version_info[0], sys.version_info[1], v, h))'
probe() {  # sets py_ver ("?" when the interpreter does not answer), py_venv, py_dev
  local out
  out="$("$PY" -c "$PROBE" 2>/dev/null)" || out=""
  read -r py_ver py_venv py_dev <<<"${out:-? 0 0}"
  [[ "$py_ver" =~ ^[0-9]+\.[0-9]+$ ]] || py_ver="?"
}
old() {  # "3.9" is older than 3.11
  local major="${1%%.*}" minor="${1#*.}"
  [ "$major" -lt 3 ] || { [ "$major" -eq 3 ] && [ "$minor" -lt 11 ]; }
}

# The interpreter first. A missing python3 is installed with the rest (and its version checked
# after); one that is there but too old is refused before anything is installed.
py_installed=""
if command -v "$PY" >/dev/null 2>&1; then
  probe
  [ "$py_ver" != "?" ] || does_not_run
  old "$py_ver" && too_old "$py_ver"
  # Debian's names: python3-venv for the default python3, python3.13-venv for PYTHON=python3.13
  pkg="python3"; [ -z "${PYTHON:-}" ] || pkg="python$py_ver"
  [ "$py_venv" = 1 ] || need_apt+=("$pkg-venv")
  [ "$py_dev" = 1 ] || need_apt+=("$pkg-dev")
elif [ -z "${PYTHON:-}" ]; then
  py_installed=1
  py_ver=""
  need_apt+=(python3 python3-venv python3-dev)
else
  echo "PYTHON=$PYTHON: no such interpreter" >&2
  exit 1
fi

installed libspeexdsp-dev || need_apt+=(libspeexdsp-dev)
need_cmd gcc gcc
# the C library's headers: only a Recommends of gcc (python3-dev brings them, a PYTHON=... may not)
installed libc6-dev || need_apt+=(libc6-dev)
need_cmd pkg-config pkg-config
# scripts/test only: headless Chromium for the status page test (tests/test_status_page.py);
# tests/test_deploy.py: real sshd hosts (/usr/sbin/sshd, ssh-keygen) in network namespaces (ip),
# and systemd-analyze to verify the unit (Debian has it only in the systemd package; installing it
# does not make systemd the init). start-stop-daemon is in dpkg, always there.
if [ "${EAS_TEST_DEPS:-}" = 1 ]; then
  need_cmd chromium chromium
  installed openssh-server || need_apt+=(openssh-server)
  need_cmd ssh-keygen openssh-client
  need_cmd ip iproute2
  need_cmd systemd-analyze systemd
fi

if [ -n "${PYTHON:-}" ]; then VENV=".venv-py${py_ver/./}"; else VENV=".venv"; fi
# The files that decide what is installed: the packaging, every cffi build script and the C
# source they read (globbed: a new extension is stamped without touching this line).
stamp="$VENV/.installed-$(shopt -s nullglob; cat setup.cfg setup.py pyproject.toml \
  esl_audio_stream/*/_*_build.py esl_audio_stream/*/*.c | sha1sum | cut -c1-12)"
# A virtualenv made by another version of the interpreter (python3 upgraded with the distribution)
# is made again.
venv_ok() {
  [ -n "$py_ver" ] && "$VENV/bin/python" -c \
    "import sys; sys.exit('%d.%d' % sys.version_info[:2] != '$py_ver')" >/dev/null 2>&1
}

if [ -n "$DRY_RUN" ]; then
  echo "apt-get install ${apt_opts[*]}: ${need_apt[*]:-(none)}"
  [ -z "$py_installed" ] || echo "then: refuse python3 if it is older than 3.11"
  if ! venv_ok; then
    echo "venv: $VENV: create with $PY, pip install -e .[test]"
  elif [ ! -e "$stamp" ]; then
    echo "venv: $VENV: pip install -e .[test]"
  else
    echo "venv: $VENV: up to date"
  fi
  exit 0
fi

if [ ${#need_apt[@]} -gt 0 ]; then
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null 2>&1 || {
      echo "needs ${need_apt[*]}: run as root, or install sudo" >&2; exit 1; }
    SUDO="sudo"
  fi
  echo "installing ${need_apt[*]} with apt-get" >&2
  $SUDO apt-get update -qq
  # env: sudo would drop DEBIAN_FRONTEND from its environment
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${apt_opts[@]}" \
    "${need_apt[@]}" >/dev/null
fi
if [ -n "$py_installed" ]; then
  probe
  [ "$py_ver" != "?" ] || does_not_run
  old "$py_ver" && too_old "$py_ver"
fi

venv_ok || "$PY" -m venv --clear "$VENV"
if [ ! -e "$stamp" ]; then
  "$VENV/bin/python" -m pip install -q --upgrade pip >/dev/null
  "$VENV/bin/python" -m pip install -q -e '.[test]'
  rm -f "$VENV"/.installed-*; touch "$stamp"
fi
