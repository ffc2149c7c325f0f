#!/usr/bin/env bash
# The main job on a fresh machine: set up, train SVG-LP on the embedded Stochastic Moving MNIST (no download),
# evaluate it with the SRVP protocol, and leave samples (GIF), the report and the plots under runs/demo/.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
STEPS="${STEPS:-200}"
rm -rf runs/demo
vpkit train --plugin svg --steps "$STEPS" --batch-size 16 --out runs/demo \
  --set train.val_every=100 --set train.val_videos=32 --set train.sample_every=100 --set train.checkpoint_every=100
vpkit eval runs/demo/checkpoints/best --samples 10 --videos 64 --out runs/demo/eval
echo "Samples: runs/demo/eval/samples.gif  Report: runs/demo/eval/report.json  Plots: runs/demo/eval/*.png"
