#!/usr/bin/env bash
# Create (or refresh) the Prefect peer venv at benchmarks/peers/prefect/.venv. Idempotent: an existing venv whose
# installed set matches requirements.txt is left alone (a stamp file records the requirements hash).
#
# Why a separate venv: Prefect 3 brings its own server stack (and needs an older FastAPI than recplane's);
# run_prefect.py never imports recplane and recplane never imports Prefect.
#
# Environment:
#   PREFECT_PEER_PYTHON  interpreter to build the venv from (default: python3.11, else python3).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="$here/.venv"
requirements="$here/requirements.txt"
stamp="$venv/.requirements.sha256"

python="${PREFECT_PEER_PYTHON:-}"
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
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$requirements"

# Smoke test: the imports run_prefect.py needs, at the versions it was measured with.
"$venv/bin/python" - <<'PY'
import prefect
from prefect import flow, task  # noqa: F401
assert prefect.__version__ == "3.8.8", prefect.__version__
print(f"prefect {prefect.__version__} ready")
PY
echo "$wanted" > "$stamp"
