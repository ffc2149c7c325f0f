#!/usr/bin/env bash
# Create (or reuse) the virtual environment with everything vpkit, its plugins and its tests need.
# Usage: source scripts/setup.sh   (or bash scripts/setup.sh)
# VPKIT_VENV chooses where the environment lives (default: .venv in the repository). A stamp holding a hash of the
# dependency files lets a second run skip the install; the project itself is re-linked (editable) every time.
set -euo pipefail
VPKIT_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VPKIT_VENV="${VPKIT_VENV:-$VPKIT_ROOT/.venv}"
PYTHON="${PYTHON:-python3}"
deps_hash="$(cat "$VPKIT_ROOT/pyproject.toml" "$VPKIT_ROOT"/plugins/*/pyproject.toml "$VPKIT_ROOT/scripts/setup.sh" \
  | sha256sum | cut -c1-16)"
stamp="$VPKIT_VENV/.vpkit-deps-$deps_hash"
plugins=()  # every in-repo plugin package, installed editable
for dir in "$VPKIT_ROOT"/plugins/*/; do plugins+=(-e "${dir%/}"); done
if [ ! -f "$stamp" ]; then
  echo "[setup] creating $VPKIT_VENV (dependencies $deps_hash)"
  rm -rf "$VPKIT_VENV"
  "$PYTHON" -m venv "$VPKIT_VENV"
  "$VPKIT_VENV/bin/python" -m pip install -q --upgrade pip "setuptools>=68" wheel
  # torch 2.14.1 + torchvision 0.29.1 is the pair with which `lpips` imports on these machines; pin it first.
  "$VPKIT_VENV/bin/python" -m pip install -q torch==2.14.1 torchvision==0.29.1
  "$VPKIT_VENV/bin/python" -m pip install -q -e "$VPKIT_ROOT[test,tensorboard,onnx]" "${plugins[@]}"
  touch "$stamp"
fi
# Re-link the checkout (a cached environment may have been built from another clone).
"$VPKIT_VENV/bin/python" -m pip install -q --no-deps --no-build-isolation -e "$VPKIT_ROOT" "${plugins[@]}" >/dev/null
export PATH="$VPKIT_VENV/bin:$PATH"
export VPKIT_VENV
