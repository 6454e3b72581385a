#!/usr/bin/env bash
# Run ON the lent GPU machine, from the repository root, with .gpu-wheels carried (bench/gpu/fetch_wheels.sh):
#   bench/gpu/measure.sh h100-sxm [MODEL]
# Times GEMMs, attention, RMSNorm/SiLU/add and whole decode steps of MODEL (default llama-3-8b, built at full
# size with random weights) into $OUT/DEVICE.csv.gz, every row with its provenance (torch, GPU, CUDA, driver,
# date); then scores the shipped model of DEVICE on those rows (kernels and steps it was never fitted on).
# Everything it writes is under $OUT (the device tool brings that folder back): the table, the command's
# log, nvidia-smi's view of the card, and the validation summary and plots.
set -euo pipefail
DEVICE=${1:?usage: bench/gpu/measure.sh DEVICE_PRESET [MODEL]}
MODEL=${2:-llama-3-8b}
OUT=${OUT:-out/gpu}
PYTHON=${PYTHON:-python3}
CUDA_FLAG=${CUDA_FLAG---cuda}  # CUDA_FLAG= (empty) runs the same steps on the CPU, to try the script out
mkdir -p "$OUT"
if ! "$PYTHON" -c "import pydantic, simpy" 2>/dev/null; then
    "$PYTHON" -m pip install --quiet --no-index --find-links .gpu-wheels pydantic simpy
fi
if command -v nvidia-smi >/dev/null; then
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,power.limit --format=csv \
        > "$OUT/nvidia-smi.csv"
fi
# shellcheck disable=SC2086  # CUDA_FLAG is one flag or none
"$PYTHON" -m explore measure $CUDA_FLAG --device-name "$DEVICE" --model "$MODEL" ${MEASURE_ARGS:-} \
    -o "$OUT/$DEVICE.csv.gz" 2>&1 | tee "$OUT/measure.log"
"$PYTHON" -m explore validate "$OUT/$DEVICE.csv.gz" --device "$DEVICE" --json --out "$OUT/validate" \
    > "$OUT/validate.json"
"$PYTHON" -m explore validate "$OUT/$DEVICE.csv.gz" --device "$DEVICE" --out "$OUT/validate" | tee "$OUT/validate.txt"
