#!/usr/bin/env bash
# Run the test suite on a fresh machine: system tools, test extras, test audio, then pytest.
# Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
for l in en fr es; do [ -e /usr/share/asterisk/sounds/$l/agent-pass.wav ] || need+=(asterisk-core-sounds-$l asterisk-core-sounds-$l-wav); done
command -v espeak-ng >/dev/null || need+=(espeak-ng)
command -v ffmpeg >/dev/null || need+=(ffmpeg)
[ -e /usr/lib/x86_64-linux-gnu/openblas-pthread/libopenblas.so.0 ] || [ "$(uname -m)" != x86_64 ] || need+=(libopenblas0-pthread)
if [ ${#need[@]} -gt 0 ] && command -v apt-get >/dev/null; then
  sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
  $sudo apt-get update -qq && $sudo apt-get install -y -qq "${need[@]}" >/dev/null
fi

python -m pip install -q -e ".[cpu,test]"
# the native CPU kernels: an MLX extension, compiled against the MLX just installed
python -m pip install -q "nanobind>=3.1" setuptools
python -m pip install -q --no-build-isolation --no-deps -e .
# whisperX for tests/test_whisperx_compat.py: its metadata pins torch 2.8, so without its dependencies
python -m pip install -q --no-deps "whisperx==3.8.6"
python scripts/make_test_data.py
python scripts/make_devset.py
python -m pytest -q "$@"
