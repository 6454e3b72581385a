#!/usr/bin/env bash
# Run ON the lent GPU machine, from the repository root, with .gpu-wheels carried (bench/gpu/fetch_wheels.sh), as
# one device call (on an H200, 2026-12-04: 2 min 1 s before measure.sh timed prefills too, which took 38 s more;
# besides the machine's start; the quantized GEMMs, int4 steps and reduction check added since have not yet run on a
# GPU):
#   bench/gpu/session.sh h200 [MODEL ...]
# Everything a session measures, in one go: the flush, warm-input and reduction checks (bench/gpu/check_flush.py,
# check_warm.py, check_reduction.py), the kernel, decode-step and prefill tables (bench/gpu/measure.sh, default models llama-3-8b and
# llama-2-7b) and a profile of one eager decode step of each model at batch 1 and 32 after 2,048 cached tokens (bench/gpu/profile_step.py; their ops carry their
# modules). The device tool brings back at most 8 files, so everything is packed into $OUT/session.tar.gz as each
# part finishes (a run cut short keeps what finished), beside the log. Unpack it here, score it (explore validate),
# and commit what holds under data/measured/ with a README of its provenance.
set -euo pipefail
DEVICE=${1:?usage: bench/gpu/session.sh DEVICE_PRESET [MODEL ...]}
shift
if [ $# -gt 0 ]; then MODELS=("$@"); else MODELS=(llama-3-8b llama-2-7b); fi
FINAL=${OUT:-out/gpu}
PYTHON=${PYTHON:-python3}
CUDA_FLAG=${CUDA_FLAG---cuda}  # CUDA_FLAG= (empty) runs it all on the CPU, to try the script out on small models
WORK=$(mktemp -d)
export PYTHONUNBUFFERED=1 PYTHONPATH=. CUDA_FLAG PYTHON
mkdir -p "$FINAL"
if ! "$PYTHON" -c "import pydantic, simpy" 2>/dev/null; then
    "$PYTHON" -m pip install --quiet --no-index --find-links .gpu-wheels pydantic simpy
fi
pack() { tar -czf "$FINAL/session.tar.gz" -C "$WORK" .; }
{
    if [ -n "$CUDA_FLAG" ]; then FLUSH_ARGS=(); else FLUSH_ARGS=(--cpu); fi
    "$PYTHON" bench/gpu/check_flush.py "$WORK/$DEVICE-flush-check.csv" "${FLUSH_ARGS[@]}"
    "$PYTHON" bench/gpu/check_warm.py "$WORK/$DEVICE-warm-check.csv" "${FLUSH_ARGS[@]}"
    "$PYTHON" bench/gpu/check_reduction.py "$WORK/$DEVICE-reduction-check.csv" "${FLUSH_ARGS[@]}"
    pack
    OUT="$WORK" bench/gpu/measure.sh "$DEVICE" "${MODELS[@]}"
    pack
    for model in "${MODELS[@]}"; do
        for batch in 1 32; do
            name="$DEVICE-profile-$(basename "$model" .json)-b$batch.json.gz"
            "$PYTHON" bench/gpu/profile_step.py "$model" "$batch" 2048 "$WORK/$name"
            pack
        done
    done
} 2>&1 | tee "$FINAL/session.log"
