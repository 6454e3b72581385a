"""IterationCostModel: the time and energy of any serving iteration on one device, memoized by shape bucket.

An iteration's kernels come from the model's step template (kernels/shapes.py) and are priced by the device
model in one call; kernels run back to back, so the iteration takes the sum of their times, or its host
dispatch time where that is longer (sim/step_costs.py: host and device overlap). Shapes that
differ only by a few keys of attention are priced once: with `kv_bucket_tokens` > 0, the mean keys a decode
token attends to, a prefill query attends to, and a chunk reads from its cached prefix are rounded to that
many tokens (a long run then prices each distinct bucket once). With 0 every shape is priced as it is.

On `stages` pipeline stages an iteration passes each stage in turn: a stage runs its share of the decoder layers
(kernels/shapes.py StepTemplate.stage_table) on its own devices and host, then sends the hidden state of every
token to the next stage (kernels/parallel.py stage_send_bytes_per_token, as pipeline_sends prices a static
batch's sends).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hw_models.device import dispatch_s
from kernels.kernel import KIND_CLASS, KernelKind
from kernels.parallel import collective_kernel
from kernels.shapes import StepShape, StepTemplate
from kernels.table import KernelTable
from sim.step_costs import HOST_WAIT, host_stall_s, pass_execution

KERNEL_CLASS_NAMES = tuple(dict.fromkeys(KIND_CLASS.values()))
# An iteration's time by class: its kernel classes' busy time, then its wait on the host.
TIME_CLASS_NAMES = (*KERNEL_CLASS_NAMES, HOST_WAIT)
# Mean KV lengths under this many buckets are priced exactly (a bucket would be over 1/8 of them).
EXACT_BUCKETS = 8


@dataclass(frozen=True, kw_only=True)
class IterationCost:
    """Time and dynamic energy of one iteration; its time by class (TIME_CLASS_NAMES order)."""

    time_s: float
    compute_J: float
    memory_J: float
    class_time_s: np.ndarray
    # Each pipeline stage's time, its send to the next stage included (one stage: (time_s,)); time_s is their sum.
    stage_time_s: tuple[float, ...] = ()


class IterationCostModel:
    """Prices iterations of one model (its step template) on one device in one execution mode."""

    def __init__(self, device, template: StepTemplate, *, execution: str = "eager", kv_bucket_tokens: int = 0,
                 stages: int = 1, send_B_per_token: float = 0.0):
        """`stages`: pipeline stages, each sending `send_B_per_token` bytes per token to the next
        (kernels/parallel.py stage_send_bytes_per_token)."""
        if kv_bucket_tokens < 0:
            raise ValueError(f"kv_bucket_tokens: found {kv_bucket_tokens}, allowed: an integer >= 0")
        if stages != 1 and not (1 < stages <= template.attention_layers and send_B_per_token > 0):
            raise ValueError(f"stages: found {stages} (send_B_per_token {send_B_per_token}), allowed: 1 to the "
                             f"model's {template.attention_layers} layers, with bytes to send beyond one stage")
        self.device = device
        self.template = template
        self.execution = execution
        self.kv_bucket_tokens = kv_bucket_tokens
        self.stages = stages
        self.send_B_per_token = send_B_per_token
        self._memo: dict[tuple, IterationCost] = {}

    @property
    def shapes_priced(self) -> int:
        """How many distinct shape buckets have been priced."""
        return len(self._memo)

    def price(self, shape: StepShape) -> IterationCost:
        """The cost of an iteration of this shape (the cost of its bucket's representative shape)."""
        key = self._bucket(shape)
        cost = self._memo.get(key)
        if cost is None:
            cost = self._memo[key] = self._price(self._representative(key))
        return cost

    def _round(self, total: float, per: int) -> float:
        """`total` over `per` items, rounded to the bucket; exact (as a negative key) below EXACT_BUCKETS buckets,
        where one bucket would be a large share of the value."""
        step = self.kv_bucket_tokens
        if total < EXACT_BUCKETS * step * per:
            return -total
        return round(total / per / step)

    def _bucket(self, s: StepShape) -> tuple:
        if not self.kv_bucket_tokens:
            return (s.prefill_seqs, s.prefill_tokens, s.prefill_pairs, s.prefill_cached, s.decode_seqs, s.decode_kv,
                    s.sampled, s.positions, s.decode_query, s.decode_flops_per_kv, s.decode_shared_kv,
                    s.decode_shared_seqs)
        return (s.prefill_seqs, s.prefill_tokens, self._round(s.prefill_pairs, max(s.prefill_tokens, 1)),
                self._round(s.prefill_cached, max(s.prefill_seqs, 1)), s.decode_seqs,
                self._round(s.decode_kv, max(s.decode_seqs, 1)), s.sampled, s.positions, s.decode_query,
                s.decode_flops_per_kv, s.decode_shared_kv, s.decode_shared_seqs)

    def _representative(self, key: tuple) -> StepShape:
        seqs, tokens, pairs, cached, decodes, kv, sampled, positions, query, flops_per_kv, shared, sharing = key
        if self.kv_bucket_tokens:
            step = self.kv_bucket_tokens

            def value(key: float, per: int) -> float:
                return -key if key <= 0 else key * step * per

            pairs, cached, kv = value(pairs, tokens), value(cached, seqs), value(kv, decodes)
        return StepShape(prefill_seqs=seqs, prefill_tokens=tokens, prefill_pairs=pairs, prefill_cached=cached,
                         decode_seqs=decodes, decode_kv=kv, sampled=sampled, positions=positions,
                         decode_query=query, decode_flops_per_kv=flops_per_kv, decode_shared_kv=shared,
                         decode_shared_seqs=sharing)

    def _price(self, shape: StepShape) -> IterationCost:
        """An iteration's cost; one that may cascade a shared prefix (StepShape.decode_shared_kv) does where that is
        the cheaper, as an engine decides per step (vLLM's use_cascade_attention weighs the two), else reads it per
        sequence."""
        cost = self._price_kernels(shape)
        if shape.decode_shared_seqs:
            paged = self._price_kernels(shape.paged())
            return paged if paged.time_s < cost.time_s else cost
        return cost

    def _price_kernels(self, shape: StepShape) -> IterationCost:
        table, counts = self.template.stage_table(shape, self.stages)
        mode = pass_execution(self.execution, decode_only=shape.prefill_seqs == 0)
        costs = self.device.cost_table(table, mode)
        time_s = costs.time_s * counts  # (stages, rows)
        stage_device_s = time_s.sum(axis=1)
        # Each stage's wait on its host, where the host's dispatch of its kernels takes longer than they run.
        waits = host_stall_s(dispatch_s(self.device, mode) * counts.sum(axis=1), stage_device_s)
        count = counts.sum(axis=0)
        class_time = np.zeros(len(TIME_CLASS_NAMES))
        for i, name in enumerate(KERNEL_CLASS_NAMES):
            mask = table.class_masks.get(name)
            if mask is not None:
                class_time[i] = time_s[:, mask].sum()
        class_time[-1] = waits.sum()
        compute_J, memory_J = float(costs.compute_J @ count), float(costs.memory_J @ count)
        stage_s = stage_device_s + waits
        if self.stages > 1:
            send = self._send(shape.tokens, table, mode)
            stage_s = stage_s + np.append(np.full(self.stages - 1, send.time_s[0]), 0.0)
            class_time[KERNEL_CLASS_NAMES.index(KIND_CLASS[KernelKind.SEND_RECV])] += send.time_s[0] * (self.stages - 1)
            compute_J += float(send.compute_J[0]) * (self.stages - 1)
            memory_J += float(send.memory_J[0]) * (self.stages - 1)
        return IterationCost(time_s=float(stage_s.sum()), compute_J=compute_J, memory_J=memory_J,
                             class_time_s=class_time, stage_time_s=tuple(stage_s.tolist()))

    def _send(self, tokens: int, table: KernelTable, mode):
        """The cost of one stage's send of the iteration's hidden state to the next stage."""
        send = collective_kernel(KernelKind.SEND_RECV, table.kernels[0], float(tokens * self.send_B_per_token), 2)
        return self.device.cost_table(KernelTable.from_kernels([send]), mode)
