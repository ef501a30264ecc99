#!/usr/bin/env bash
# The main job on the embedded synthetic dataset, from a fresh clone:
#   set-up (idempotent) -> synthetic VOC data -> supervised warm-up -> Image Score selection
#   -> pseudo-labels -> continued training -> VOC mAP before/after + report.json and PNGs.
# Extra arguments go to tools/train_net.py as KEY VALUE overrides, e.g.
#   bash tools/quickstart.sh IMAGE_SCORE.SELECTOR softmax OUTPUT_DIR output/synthetic/softmax
# CONFIG picks another config, e.g. the online teacher-student mode (its summary names the
# teacher, the student and the paired supervised copy):
#   CONFIG=configs/synthetic/teacher_V16tiny_quick.yaml bash tools/quickstart.sh
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash tools/install.sh
PY="${IMAGESCORE_VENV:-$ROOT/.venv}/bin/python"
export DETECTRON2_DATASETS="${DETECTRON2_DATASETS:-$ROOT/datasets}"
"$PY" datasets/prepare_synthetic_voc.py
CONFIG="${CONFIG:-configs/synthetic/imagescore_V16tiny_quick.yaml}"
"$PY" tools/train_net.py --config-file "$CONFIG" "$@"
