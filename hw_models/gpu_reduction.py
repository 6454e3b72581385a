"""PyTorch's row reductions on a GPU (mean, sum, amax, ... over a tensor's contiguous last dim): how many serial loads
each thread waits on, from the launch configuration PyTorch picks.

A reduction of `rows` rows of `length` values each runs aten's reduce_kernel with the block and grid that
setReduceConfig (aten/src/ATen/native/cuda/Reduce.cuh) chooses:

- its input is read as vectors of VECTOR_VALUES values when a row has at least 128 of them (`vectorize_input`),
  and the block has at most MAX_THREADS threads: block_width lanes along a row (at least a warp when the row allows
  it, more when there are few rows) and block_height rows (set_block_dimension, powers of two);
- each thread then has values_per_thread = length / block_width values of its row. When that is at least
  min(16 x block_height, 256), the block's warps split the row too (one row per block); otherwise each warp,
  or group of lanes, handles a row of its own (block_height rows per block);
- where a block's threads still hold 256 values or more and the grid is small, the row is split across blocks
  (`ctas_per_output`), so that blocks fill the SMs.

Inside a thread the loop over its values issues one vector load per iteration, and its reduction waits on that load
before the next iteration starts (input_vectorized_thread_reduce_impl: a `while` over a runtime bound, one
load_vector each): a reduction's time has a floor of its iterations times the latency of one such step, however few
bytes it moves. A reduction over few rows runs few threads per row, each with a long serial loop: the RMSNorm of an
eager decode step at batch 32 reduces 32 rows of 4,096 values with one warp per row, 32 iterations of 4 values per
lane. An H200 takes 8.9 us over it where its 0.5 MB stream would take 1.1 us (GPUSpec memory.serial_load_ns says
how long a step takes).
"""

from __future__ import annotations

import numpy as np

MAX_THREADS = 512  # threads of a reduction block for inputs of 4 bytes or less (Reduce.cuh mnt: max_reduce_threads)
WARP = 32
VECTOR_VALUES = 4  # values per vector load (ReduceConfig::input_vec_size, vt0 = 4)
VECTORIZE_FROM = 128  # values per row from which the input is read as vectors (setReduceConfig: dim0 >= 128)
MIN_VALUES_PER_THREAD = 16
MAX_VALUES_PER_THREAD = 256
MAX_THREADS_PER_SM = 2048  # resident threads per SM on compute capability 8.0 and 9.0 (CUDA C++ Programming Guide)


def _last_pow2(x: np.ndarray) -> np.ndarray:
    """The largest power of two at most x (x >= 1), capped at MAX_THREADS as set_block_dimension caps it."""
    return np.where(x < MAX_THREADS, 2.0 ** np.floor(np.log2(np.maximum(x, 1.0))), float(MAX_THREADS))


def serial_steps(rows, length, sm_count: int) -> np.ndarray:
    """Serial load steps of each reduction of `rows` rows of `length` values: the iterations of one thread's loop
    over its values, times the waves of blocks over the SMs (0 where a row is not a reduction: rows or length 0)."""
    rows, length = (np.asarray(x, dtype=float) for x in (rows, length))
    vectorized = length >= VECTORIZE_FROM
    vector = np.where(vectorized, float(VECTOR_VALUES), 1.0)
    dim0 = np.maximum(length / vector, 1.0)
    width = np.minimum(_last_pow2(dim0), WARP)
    height = np.minimum(_last_pow2(rows), MAX_THREADS / width)
    width = np.minimum(_last_pow2(dim0), MAX_THREADS / height)
    values = np.ceil(length / width)  # per thread, when each row has `width` lanes
    split_rows = values >= np.minimum(height * MIN_VALUES_PER_THREAD, MAX_VALUES_PER_THREAD)
    values = np.where(split_rows, np.ceil(values / height), values)
    rows_per_block = np.where(split_rows, 1.0, height)
    grid = np.ceil(rows / rows_per_block)
    blocks_per_sm = np.floor(MAX_THREADS_PER_SM / (width * height))
    target = sm_count * blocks_per_sm
    # Blocks per row where a row's warps still hold 256 values a thread: enough to fill the SMs, within 16-256 values.
    fill = np.minimum(np.ceil(target / np.maximum(grid, 1.0)), np.ceil(values / MIN_VALUES_PER_THREAD))
    ctas = np.where(split_rows & (values >= MAX_VALUES_PER_THREAD) & (grid <= target),
                    np.maximum(fill, np.ceil(values / MAX_VALUES_PER_THREAD)), 1.0)
    iterations = np.ceil(np.ceil(values / ctas) / vector)
    waves = np.ceil(grid * ctas / target)
    return np.where((rows > 0) & (length > 0), iterations * waves, 0.0)
