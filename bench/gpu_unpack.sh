#!/usr/bin/env bash
# Rebuild the runs bench/gpu_refine.sh packed, from the pieces the device tool brought back:
#   bash bench/gpu_unpack.sh FILES_AT [DEST=pipeline/gpu] [ROOT=pipeline]
# Their paths (autoencoders, data) are moved from the GPU machine's /tmp/pipeline to ROOT, a
# `train all --preset refine` folder here: the same recording and the same (adopted, shipped) autoencoders.
set -euo pipefail
FILES=$1; DEST=${2:-pipeline/gpu}; ROOT=$(realpath "${3:-pipeline}")
mkdir -p "$DEST"
for run in teacher_view student; do
    if ! ls "$FILES/$run.tar.part-"* > /dev/null 2>&1; then echo "no $run pieces in $FILES"; continue; fi
    cat "$FILES/$run.tar.part-"* | tar xf - -C "$DEST"
    sed -i "s#/tmp/pipeline#$ROOT#g" "$DEST/$run/config.json"
    echo "$DEST/$run: step $(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['step'])" "$DEST/$run/config.json")"
done
