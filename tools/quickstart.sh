#!/usr/bin/env bash
# The main job on the embedded synthetic dataset, from a fresh clone:
#   set-up (idempotent) -> synthetic VOC data -> supervised warm-up -> Image Score selection
#   -> pseudo-labels -> continued training -> VOC mAP before/after + report.json and PNGs.
# Extra arguments go to tools/train_net.py as KEY VALUE overrides, e.g.
#   bash tools/quickstart.sh IMAGE_SCORE.SELECTOR softmax OUTPUT_DIR output/synthetic/softmax
# CONFIG picks another config, e.g. the online teacher-student mode (its summary names the
# teacher, the student and the paired supervised copy):
#   CONFIG=configs/synthetic/teacher_V16tiny_quick.yaml bash tools/quickstart.sh
# or a run of the headroom protocol (40 labeled images, a pool of 460: room for better labels
# to help; its datasets are generated too; a 4000-iteration warm-up: about 10 minutes on 2
# cores), e.g. the whole pool with its true boxes:
#   CONFIG=configs/synthetic/oracle_V16tiny_headroom.yaml bash tools/quickstart.sh
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash tools/install.sh
PY="${IMAGESCORE_VENV:-$ROOT/.venv}/bin/python"
export DETECTRON2_DATASETS="${DETECTRON2_DATASETS:-$ROOT/datasets}"
CONFIG="${CONFIG:-configs/synthetic/imagescore_V16tiny_quick.yaml}"
case "$CONFIG" in
  *headroom*) "$PY" datasets/prepare_synthetic_voc.py --headroom ;;
  *) "$PY" datasets/prepare_synthetic_voc.py ;;
esac
"$PY" tools/train_net.py --config-file "$CONFIG" "$@"
