#!/usr/bin/env bash
# Run HERE (a machine with PyPI), before a session's first call to the lent GPU machine: downloads the wheels
# that `explore measure` and `explore validate` need beyond the GPU image's own packages into .gpu-wheels/
# (git-ignored; about 3 MB). The image has torch, numpy, scipy, pyyaml and matplotlib, but no pydantic or
# simpy, and no network; pass `.gpu-wheels` in the device tool's `carry` so measure.sh can install them.
# The image's python3 is CPython 3.12 on x86_64 (../.library/device/KINDS.md, read 2026-11).
set -euo pipefail
cd "$(dirname "$0")/../.."
PYTHON_VERSION=${PYTHON_VERSION:-3.12}
ABI="cp${PYTHON_VERSION/./}"
pip download --quiet --only-binary=:all: --python-version "$PYTHON_VERSION" --implementation cp --abi "$ABI" \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .gpu-wheels pydantic simpy
ls .gpu-wheels
