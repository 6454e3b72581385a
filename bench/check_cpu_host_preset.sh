#!/usr/bin/env bash
# Times this machine and scores the CPU preset built from its own measurements on held-out GEMM shapes
# (tests/hw_models/test_cpu_host_preset.py::test_held_out_gemms_within_tolerance): median abs. error per
# regime at most 35%; and that those timings miss a preset whose bandwidth or clock is 10x off
# (test_a_wrong_preset_misses). Machine timing, so it runs here and not in the unit run (.ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."
# -m slow: the module is a slow one (the unit run's -m 'not slow' would leave every test out); -n 0: one measurement
# at a time, not one per xdist worker timing beside the other.
LLM_CODESIGN_MACHINE_TIMING=1 python3 -m pytest -q -rA -m slow -n 0 \
  "tests/hw_models/test_cpu_host_preset.py::test_held_out_gemms_within_tolerance" \
  "tests/hw_models/test_cpu_host_preset.py::test_a_wrong_preset_misses" "$@"
