#!/usr/bin/env bash
# The test command (README; .ci/run calls it): idempotent set-up, then the whole test suite.
# Extra arguments go to pytest, e.g.  bash tools/run_tests.sh -k scoring -x
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash tools/install.sh
exec "${IMAGESCORE_VENV:-$ROOT/.venv}/bin/python" -m pytest tests "$@"
