#!/usr/bin/env bash
# Times this machine and scores the CPU preset built from its own measurements on held-out GEMM shapes
# (tests/hw_models/test_cpu_host_preset.py::test_held_out_gemms_within_tolerance): median abs. error per
# regime at most 35%. Machine timing, so it runs here and not in the unit run (.ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."
LLM_CODESIGN_MACHINE_TIMING=1 python3 -m pytest -q -rA \
  "tests/hw_models/test_cpu_host_preset.py::test_held_out_gemms_within_tolerance" "$@"
