#!/usr/bin/env bash
# Prepare .gpu/ (ignored by git, carried by the device tool) for bench/gpu_refine.sh: PyAV for the GPU
# machine's Python 3.12, unpacked and xz-packed (a wheel of 36 MB becomes 25), and the text encoder's
# embeddings of every caption `train all --preset refine` records (the GPU run records the same episodes).
#   bash bench/gpu_prepare.sh [PIPELINE]     (PIPELINE: a `train all --preset refine` output folder, for its data)
set -euo pipefail
ROOT=${1:-pipeline}
grep -qx "/.gpu/" .git/info/exclude || echo "/.gpu/" >> .git/info/exclude
mkdir -p .gpu
if [ ! -f .gpu/av.tar.xz ]; then
    v=$(.venv/bin/python -c "import av; print(av.__version__)")
    rm -rf /tmp/gpu-av && mkdir -p /tmp/gpu-av/whl /tmp/gpu-av/site
    .venv/bin/python -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 -d /tmp/gpu-av/whl "av==$v"
    (cd /tmp/gpu-av/site && unzip -q /tmp/gpu-av/whl/*.whl && tar cf - . | xz -9 -T2 > "$OLDPWD/.gpu/av.tar.xz")
fi
.venv/bin/worldstream train all --preset refine --out "$ROOT" --until record
.venv/bin/worldstream captions --data "$ROOT/data/overworld,$ROOT/data/overworld_wide" --out .gpu/captions.safetensors
du -ch .gpu/* | tail -1
