#!/usr/bin/env bash
# Run ON the lent GPU machine, from the repository root, with .gpu-wheels carried (bench/gpu/fetch_wheels.sh):
#   bench/gpu/measure.sh h200 [MODEL ...]
# Times GEMMs, attention and RMSNorm/SiLU/add into $OUT/DEVICE-KIND.csv.gz (KINDS), GEMMs below 16 bits (fp8
# per-tensor scaled, int8 W8A8, tinygemm's int4 W4A16: GEMM_DTYPES) into $OUT/DEVICE-gemm-DTYPE.csv.gz, then whole
# decode steps of each MODEL (default llama-3-8b; built at full size with random weights, each step launched eagerly
# and replayed from a CUDA graph) and its eager prefills into $OUT/DEVICE-steps-MODEL.csv.gz, and the same with
# tinygemm's int4 linears (STEP_DTYPES) into $OUT/DEVICE-steps-MODEL-w4a16.csv.gz; every row names torch, the GPU,
# CUDA, the driver and the date. KINDS, GEMM_DTYPES and STEP_DTYPES (space-separated) choose a part; empty skips it.
# Each shape's rows reach its table as they are timed, so a run cut short keeps what finished, and running the
# script again times only the shapes its tables lack (explore measure --help: the measured_as column). Also under $OUT:
# nvidia-smi's view of the card and the log. Score the tables here afterwards (explore validate), which costs
# no device time: the device tool brings back at most 8 files.
set -euo pipefail
DEVICE=${1:?usage: bench/gpu/measure.sh DEVICE_PRESET [MODEL ...]}
shift
MODELS=("${@:-llama-3-8b}")
OUT=${OUT:-out/gpu}
PYTHON=${PYTHON:-python3}
CUDA_FLAG=${CUDA_FLAG---cuda}  # CUDA_FLAG= (empty) runs the same steps on the CPU, to try the script out
export PYTHONUNBUFFERED=1
mkdir -p "$OUT"
if ! "$PYTHON" -c "import pydantic, simpy" 2>/dev/null; then
    "$PYTHON" -m pip install --quiet --no-index --find-links .gpu-wheels pydantic simpy
fi
if command -v nvidia-smi >/dev/null; then
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,clocks.max.mem,power.limit \
        --format=csv > "$OUT/nvidia-smi.csv"
fi
KINDS=${KINDS-gemm attention streaming}
GEMM_DTYPES=${GEMM_DTYPES-fp8 w8a8 w4a16}
STEP_DTYPES=${STEP_DTYPES-bf16 w4a16}
for kind in $KINDS; do
    # shellcheck disable=SC2086  # CUDA_FLAG is one flag or none; MEASURE_ARGS a list of flags
    "$PYTHON" -m explore measure $CUDA_FLAG --device-name "$DEVICE" --kinds "$kind" ${MEASURE_ARGS:-} \
        -o "$OUT/$DEVICE-$kind.csv.gz" 2>&1 | tee -a "$OUT/measure.log"
done
for dtype in $GEMM_DTYPES; do
    # shellcheck disable=SC2086
    "$PYTHON" -m explore measure $CUDA_FLAG --device-name "$DEVICE" --kinds gemm --dtype "$dtype" ${MEASURE_ARGS:-} \
        -o "$OUT/$DEVICE-gemm-$dtype.csv.gz" 2>&1 | tee -a "$OUT/measure.log"
done
for model in "${MODELS[@]}"; do
    for dtype in $STEP_DTYPES; do
        suffix=$([ "$dtype" = bf16 ] || echo "-$dtype")
        # shellcheck disable=SC2086
        "$PYTHON" -m explore measure $CUDA_FLAG --device-name "$DEVICE" --kinds decode_step,prefill_step \
            --model "$model" --dtype "$dtype" ${MEASURE_ARGS:-} \
            -o "$OUT/$DEVICE-steps-$(basename "$model" .json)$suffix.csv.gz" 2>&1 | tee -a "$OUT/measure.log"
    done
done
