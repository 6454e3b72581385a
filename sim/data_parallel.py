"""The experts of a replica whose attention runs data-parallel (kernels/data_parallel.py): `ranks` devices, each
running its own sequences' attention and dense layers, together holding the experts, in lockstep.

The ranks run their iterations in step (sim/replica.py run_lockstep), since every MoE layer exchanges tokens among all
of them; a rank with nothing to run joins with an empty batch (an engine runs a dummy batch there, not priced). In an
iteration of L MoE layers, rank r runs its sequences' dense part D_r; every device runs its experts on the tokens
routed to them from every rank, X (the tokens of all ranks, balanced over the experts as ep = tp prices them); and each
layer's dispatch and combine all-to-alls wait for the rank with the most tokens, c each. The ranks meet at every
exchange, so the iteration takes

    max_r (D_r + w_r) + X + 2 L c

with w_r the rank's wait on its host where dispatching its kernels takes longer than they run. Its energy is every
rank's dense part and every device's experts; its time by class the slowest rank's.
"""

from __future__ import annotations

from dataclasses import dataclass

from kernels.shapes import StepTemplate


@dataclass(frozen=True)
class ExpertRanks:
    """The experts' side of a data-parallel replica: `system` (hw_models/system.py SystemModel of the ranks' devices
    and their link) runs `template` (the expert rows of every MoE layer on one device, ep = tp sharded) on each device,
    and exchanges `dispatch_B_per_token` bytes per token of a rank each way in every one of `moe_layers` layers."""

    system: object
    template: StepTemplate
    dispatch_B_per_token: float
    moe_layers: int

    @property
    def ranks(self) -> int:
        return self.system.tp

    def exchange_s(self, tokens: int) -> float:
        """One layer's dispatch (or combine) all-to-all when the busiest rank sends `tokens` tokens."""
        if not tokens:
            return 0.0
        return float(self.system.link.collective_time_s("all_to_all", tokens * self.dispatch_B_per_token, self.ranks))
