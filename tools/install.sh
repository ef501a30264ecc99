#!/usr/bin/env bash
# Idempotent set-up of imagescore-det: a virtualenv with PyTorch, Detectron2, the Python
# dependencies and this package (editable). A second run with nothing changed does nothing.
#
# Environment:
#   IMAGESCORE_VENV   where the virtualenv lives            (default: <repo>/.venv)
#   PYTHON            interpreter that creates it            (default: python3)
#   IMAGESCORE_D2     how Detectron2 is installed:
#                       auto   - from source at the pinned commit if GitHub answers, else wheel
#                       source - build from source at $IMAGESCORE_D2_COMMIT (needs a compiler;
#                                CUDA ops are built when nvcc and a CUDA torch are present)
#                       wheel  - PyPI's sal-detectron2 wheel, pure-Python part only (offline route)
#   IMAGESCORE_D2_COMMIT  Detectron2 commit for the source route
#   IMAGESCORE_TORCH  pip requirement(s) for PyTorch (default: torch==2.14.1 torchvision==0.29.1)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${IMAGESCORE_VENV:-$ROOT/.venv}"
PYTHON="${PYTHON:-python3}"
D2_MODE="${IMAGESCORE_D2:-auto}"
D2_COMMIT="${IMAGESCORE_D2_COMMIT:-2dde706855d87baa9760fbcd0bdb6004a3937204}"
TORCH_REQ="${IMAGESCORE_TORCH:-torch==2.14.1 torchvision==0.29.1}"

log() { echo "[install] $*"; }

# The stamp records every input of the installation; equal stamp + a working import = done.
stamp_text() {
  cat "$ROOT/tools/install.sh" "$ROOT/tools/install_detectron2_wheel.py" \
      "$ROOT/requirements/runtime.txt" "$ROOT/requirements/test.txt" "$ROOT/setup.py"
  echo "$D2_MODE $D2_COMMIT $TORCH_REQ $ROOT"
}
STAMP="$VENV/.imagescore-det-installed"
want="$(stamp_text | sha256sum | cut -d' ' -f1)"
if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$want" ]] &&
   "$VENV/bin/python" -c "import imagescore_det, detectron2" 2>/dev/null; then
  log "up to date: $VENV (delete $STAMP to force a reinstall)"
  exit 0
fi

if [[ ! -x "$VENV/bin/python" ]]; then
  log "creating virtualenv $VENV with $PYTHON"
  "$PYTHON" -m venv "$VENV"
fi
PY="$VENV/bin/python"
# --no-compile: pip byte-compiles one file at a time; the installed packages are compiled
# once below on every core instead (the .pyc must exist: with PYTHONDONTWRITEBYTECODE set,
# as on this project's machines, Python would otherwise recompile them in every process).
PIP=("$PY" -m pip install --disable-pip-version-check --no-compile)

# shellcheck disable=SC2086
if ! "$PY" - $TORCH_REQ <<'PYEOF' 2>/dev/null
import sys
from importlib.metadata import version
for req in sys.argv[1:]:
    name, _, ver = req.partition("==")
    if ver and version(name).split("+")[0] != ver:
        sys.exit(1)
PYEOF
then
  log "installing $TORCH_REQ"
  # shellcheck disable=SC2086
  "${PIP[@]}" $TORCH_REQ
fi

log "installing Python dependencies"
"${PIP[@]}" -r "$ROOT/requirements/runtime.txt" -r "$ROOT/requirements/test.txt"

if [[ "$D2_MODE" == auto ]]; then
  if command -v git >/dev/null &&
     timeout 20 git ls-remote https://github.com/facebookresearch/detectron2 HEAD >/dev/null 2>&1; then
    D2_MODE=source
  else
    D2_MODE=wheel
  fi
  log "IMAGESCORE_D2=auto chose '$D2_MODE'"
fi
case "$D2_MODE" in
  source)
    log "building Detectron2 from source at $D2_COMMIT"
    "${PIP[@]}" --no-build-isolation \
      "detectron2 @ git+https://github.com/facebookresearch/detectron2.git@$D2_COMMIT" ;;
  wheel)
    log "installing Detectron2's Python package from the sal-detectron2 wheel"
    "$PY" "$ROOT/tools/install_detectron2_wheel.py" ;;
  *) echo "error: IMAGESCORE_D2=$D2_MODE; use auto, source or wheel" >&2; exit 2 ;;
esac

log "installing imagescore-det (editable)"
"${PIP[@]}" --no-deps --no-build-isolation -e "$ROOT"

log "byte-compiling the installed packages"
SITE="$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
# a file that does not compile (pip skips those too) is not an error of the set-up
"$PY" -m compileall -q -j 0 "$SITE" >/dev/null 2>&1 || true
"$PY" -c "import imagescore_det, detectron2"
echo "$want" > "$STAMP.tmp" && mv "$STAMP.tmp" "$STAMP"
"$PY" -m imagescore_det.env
log "done: activate with 'source $VENV/bin/activate'"
