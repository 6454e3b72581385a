"""Run ON the lent GPU machine, from the repository root: profile one eager decode step of MODEL at BATCH and
CONTEXT cached tokens into OUT (.json.gz), for `explore validate --profile OUT --device DEVICE` to score op by op;
with --prefill, the prefill of BATCH prompts of CONTEXT tokens instead.

    python3 bench/gpu/profile_step.py llama-3-8b 1 2048 $OUT/h200-profile-llama-3-8b-b1.json.gz
    python3 bench/gpu/profile_step.py llama-3-8b 4 2048 $OUT/h200-profile-llama-3-8b-prefill-b4.json.gz --prefill
"""

from __future__ import annotations

import sys

from kernels import harness
from workloads.model_config import load_model_config


def main(argv: list[str]) -> int:
    model, batch, context, out = argv[0], int(argv[1]), int(argv[2]), argv[3]
    prefill = "--prefill" in argv[4:]
    device = "cuda" if harness._torch().cuda.is_available() else "cpu"
    if prefill:
        kernels = harness.profile_decode_step(load_model_config(model), out, batch=batch, context_len=0,
                                              new_tokens=context, device=device)
    else:
        kernels = harness.profile_decode_step(load_model_config(model), out, batch=batch, context_len=context,
                                              device=device)
    step = f"prefill of {batch} x {context} tokens" if prefill else f"decode step, batch {batch}, context {context}"
    print(f"{out}: one eager {step} of {model}, {kernels} device kernels ({harness.harness_source(device)})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
