#!/usr/bin/env bash
# Set up the environment (scripts/setup.sh) and run the whole test suite on 2 processes.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
python -m pytest -n 2 -q "$@"
