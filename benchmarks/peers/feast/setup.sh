#!/usr/bin/env bash
# Create (or refresh) the Feast peer venv at benchmarks/peers/feast/.venv. Idempotent: an existing venv whose
# installed set already matches requirements.txt is left alone (a stamp file records the requirements hash).
#
# Why a separate venv: Feast pins its own pandas 2.x, dask, ibis and protobuf lines; recplane's environment never
# bends to them, and run_feast.py never imports recplane.
#
# Environment:
#   FEAST_PEER_PYTHON  interpreter to build the venv from (default: python3.11, else python3); 3.10-3.12 work with
#                      the pinned wheels, 3.11 is what the benchmark was measured with.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="$here/.venv"
requirements="$here/requirements.txt"
stamp="$venv/.requirements.sha256"

python="${FEAST_PEER_PYTHON:-}"
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

# --no-deps: requirements.txt is the complete, pinned set resolved from feast[duckdb,redis]==0.67.0.
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps -r "$requirements"

# Smoke test: the imports run_feast.py needs, and the versions it was verified with.
"$venv/bin/python" - <<'PY'
import dask, duckdb, ibis, pandas, pyarrow, redis
import feast
from feast import Entity, FeatureStore, FeatureView, Field, FileSource  # noqa: F401
from feast.infra.offline_stores.duckdb import DuckDBOfflineStore  # noqa: F401
from feast.infra.offline_stores.dask import DaskOfflineStore  # noqa: F401
from feast.infra.online_stores.redis import RedisOnlineStore  # noqa: F401
from feast.infra.online_stores.sqlite import SqliteOnlineStore  # noqa: F401
assert feast.__version__ == "0.67.0", feast.__version__
print(f"setup.sh: feast {feast.__version__}, duckdb {duckdb.__version__}, ibis {ibis.__version__}, "
      f"dask {dask.__version__}, pandas {pandas.__version__}, pyarrow {pyarrow.__version__}, redis {redis.__version__}")
PY
echo "$wanted" >"$stamp"
