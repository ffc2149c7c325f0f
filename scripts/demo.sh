#!/usr/bin/env bash
# The main job on a fresh machine: set up, train SVG-LP on the embedded Stochastic Moving MNIST (no download),
# evaluate it with the SRVP protocol, export it to ONNX (parity-checked), and predict an MP4 video with the export;
# samples (GIF), the report, the plots, the export and the predicted MP4/GIF end up under runs/demo/.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
STEPS="${STEPS:-200}"
rm -rf runs/demo
vpkit train --plugin svg --steps "$STEPS" --batch-size 16 --out runs/demo \
  --set train.val_every=100 --set train.val_videos=32 --set train.sample_every=100 --set train.checkpoint_every=100
vpkit eval runs/demo/checkpoints/best --samples 10 --videos 64 --out runs/demo/eval
vpkit export runs/demo/checkpoints/best --format onnx --out runs/demo/export-onnx
python scripts/make_demo_video.py runs/demo/smmnist.mp4 --frames 100
vpkit predict runs/demo/smmnist.mp4 --model runs/demo/export-onnx --samples 3 --out runs/demo/predict/smmnist.mp4
vpkit predict runs/demo/smmnist.mp4 --model runs/demo/export-onnx --samples 3 --sliding \
  --out runs/demo/predict/smmnist-sliding.mp4
echo "Samples: runs/demo/eval/samples.gif  Report: runs/demo/eval/report.json  Plots: runs/demo/eval/*.png"
echo "Export: runs/demo/export-onnx  Predictions: runs/demo/predict/*.mp4|gif"
