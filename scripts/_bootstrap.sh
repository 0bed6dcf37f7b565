# Sourced by scripts/demo, scripts/test and scripts/bench: makes this checkout runnable on a fresh
# Debian machine (apt packages, a .venv, the package with its test extras), doing only what is missing.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

need_apt=()
dpkg -s libspeexdsp-dev >/dev/null 2>&1 || need_apt+=(libspeexdsp-dev)
command -v gcc >/dev/null 2>&1 || need_apt+=(gcc)
command -v pkg-config >/dev/null 2>&1 || need_apt+=(pkg-config)
# scripts/test only: headless Chromium for the status page test (tests/test_status_page.py);
# tests/test_deploy.py: real sshd hosts in network namespaces, start-stop-daemon, systemd-analyze
if [ "${EAS_TEST_DEPS:-}" = 1 ]; then
  command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)
  [ -x /usr/sbin/sshd ] || need_apt+=(openssh-server)
  command -v ssh-keygen >/dev/null 2>&1 || need_apt+=(openssh-client)
  command -v ip >/dev/null 2>&1 || need_apt+=(iproute2)
  command -v systemd-analyze >/dev/null 2>&1 || need_apt+=(systemd)
fi
PY="${PYTHON:-python3}"
"$PY" -c 'import sys; assert sys.version_info >= (3, 11)' 2>/dev/null || {
  echo "esl-audio-stream needs Python >= 3.11 (set PYTHON=...)" >&2; exit 1; }
"$PY" -c 'import venv, ensurepip' >/dev/null 2>&1 || need_apt+=(python3-venv)
"$PY" -c 'import sysconfig, os, sys; sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))' \
  || need_apt+=(python3-dev)
if [ ${#need_apt[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  echo "installing ${need_apt[*]} with apt-get" >&2
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

[ -x .venv/bin/python ] || "$PY" -m venv .venv
stamp=".venv/.installed-$(cat setup.cfg setup.py pyproject.toml esl_audio_stream/media/_speex_build.py esl_audio_stream/ws/_mask_build.py | sha1sum | cut -c1-12)"
if [ ! -e "$stamp" ]; then
  .venv/bin/python -m pip install -q --upgrade pip >/dev/null
  .venv/bin/python -m pip install -q -e '.[test]'
  rm -f .venv/.installed-*; touch "$stamp"
fi
