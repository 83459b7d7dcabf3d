#!/usr/bin/env bash
# Create (or refresh) the Ray Serve peer venv at benchmarks/peers/rayserve/.venv (git-ignored). Idempotent: a venv
# whose stamp matches requirements.txt's hash is left alone.
#
# Why a separate venv: Ray pins its own grpcio, protobuf, pydantic and aiohttp lines; recplane's environment never
# bends to them, and serve_peer.py never imports recplane (it reads the bundle's plain files).
#
# Environment:
#   RAYSERVE_PEER_PYTHON  interpreter to build the venv from (default: python3.11, else python3).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="$here/.venv"
requirements="$here/requirements.txt"
stamp="$venv/.requirements.sha256"

python="${RAYSERVE_PEER_PYTHON:-}"
if [[ -z "$python" ]]; then
  if command -v python3.11 >/dev/null 2>&1; then python=python3.11; else python=python3; fi
fi

wanted="$(sha256sum "$requirements" | cut -d' ' -f1)"
if [[ -x "$venv/bin/python" && -f "$stamp" && "$(cat "$stamp")" == "$wanted" ]]; then
  echo "setup.sh: $venv is up to date"
  exit 0
fi

if [[ ! -x "$venv/bin/python" ]]; then
  "$python" -m venv "$venv"
fi
# torch is named in the same install as everything else so that pip keeps the CPU wheel.
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$requirements"

# Smoke test: the imports serve_peer.py needs, and the versions it was verified with.
"$venv/bin/python" - <<'PY'
import numpy, pyarrow, ray, torch
from ray import serve  # noqa: F401
from starlette.requests import Request  # noqa: F401
assert ray.__version__ == "2.60.0", ray.__version__
assert torch.__version__.startswith("2.13.0"), torch.__version__
print(f"setup.sh: ray {ray.__version__}, torch {torch.__version__}, numpy {numpy.__version__}, "
      f"pyarrow {pyarrow.__version__}")
PY
echo "$wanted" >"$stamp"
