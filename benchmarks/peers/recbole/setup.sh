#!/usr/bin/env bash
# Create (or refresh) the RecBole 1.2.1 peer venv at benchmarks/peers/recbole/.venv. Idempotent: an existing venv
# whose installed set already matches requirements.txt is left alone (a stamp file records the requirements hash).
#
# Why a separate venv: RecBole 1.2.1 needs numpy 1.x, scipy < 1.12 and pandas 2.x, which recplane does not use;
# keeping the peer apart means recplane's own environment never bends to the peer's pins.
#
# Environment:
#   RECBOLE_PEER_PYTHON  interpreter to build the venv from (default: python3.11, else python3); must be 3.11 since
#                        the pinned torch==2.13.0 wheel is cp311.
#   RECBOLE_WHEEL_DIR    folder holding recbole-1.2.1-py3-none-any.whl to install offline (default: the repo's
#                        .cache/ when it has the wheel; otherwise pip fetches recbole from the package index).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../../.." && pwd)"
venv="$here/.venv"
requirements="$here/requirements.txt"
stamp="$venv/.requirements.sha256"

python="${RECBOLE_PEER_PYTHON:-}"
if [[ -z "$python" ]]; then
  if command -v python3.11 >/dev/null 2>&1; then python=python3.11; else python=python3; fi
fi
version="$("$python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
if [[ "$version" != "3.11" ]]; then
  echo "setup.sh: $python is Python $version; the pinned torch==2.13.0 wheel needs Python 3.11." >&2
  echo "          Set RECBOLE_PEER_PYTHON to a Python 3.11 interpreter." >&2
  exit 2
fi

wanted="$(sha256sum "$requirements" | cut -d' ' -f1)"
if [[ -x "$venv/bin/python" && -f "$stamp" && "$(cat "$stamp")" == "$wanted" ]]; then
  echo "setup.sh: $venv is up to date"
  exit 0
fi

if [[ ! -x "$venv/bin/python" ]]; then
  "$python" -m venv "$venv"
fi

wheel_dir="${RECBOLE_WHEEL_DIR:-$repo/.cache}"
find_links=()
if [[ -f "$wheel_dir/recbole-1.2.1-py3-none-any.whl" ]]; then
  find_links=(--find-links "$wheel_dir")
fi

# --no-deps: requirements.txt is the complete, pinned set (it leaves out ray and plotly on purpose; see there).
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps "${find_links[@]}" -r "$requirements"

# Smoke test: the imports run_recbole.py needs, and the versions it was verified with.
"$venv/bin/python" - <<'PY'
import numpy, pandas, scipy, torch
import recbole
from recbole.config import Config  # noqa: F401
from recbole.data import create_dataset, data_preparation  # noqa: F401
from recbole.utils import get_model, get_trainer, init_logger, init_seed  # noqa: F401
assert recbole.__version__ == "1.2.1", recbole.__version__
assert torch.__version__.startswith("2.13.0"), torch.__version__
print(f"setup.sh: recbole {recbole.__version__}, torch {torch.__version__}, numpy {numpy.__version__}, "
      f"scipy {scipy.__version__}, pandas {pandas.__version__}")
PY
echo "$wanted" >"$stamp"
