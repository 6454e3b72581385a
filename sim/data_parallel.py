"""The experts of a replica whose attention runs data-parallel (kernels/data_parallel.py): `ranks` devices, each
running its own sequences' attention and dense layers, together holding the experts, in lockstep.

The experts are spread whole over the devices (ep = tp), each token sent to its experts' devices and back by two
all-to-alls a layer, or split over them (ep 1, every device a share of every expert, as tensor parallelism splits
them), every rank's tokens gathered onto every device (an all-gather) and the partial outputs summed back to their
ranks (a reduce-scatter), as SGLang's DP attention runs a tensor-parallel MoE; each rank's tokens padded to the
busiest rank's, as SGLang pads them.

The ranks run their iterations in step (sim/replica.py run_lockstep), since every MoE layer exchanges tokens among all
of them; a rank with nothing to run joins with an empty batch (an engine runs a dummy batch there, not priced). In an
iteration of L MoE layers, rank r runs its sequences' dense part D_r; every device runs its experts on the tokens
routed to them from every rank, X (the tokens of all ranks, balanced over the experts as ep = tp prices them); and each
layer's two exchanges wait for the rank with the most tokens, c in all. The ranks meet at every exchange, so the
iteration takes

    max_r (D_r + w_r) + X + L c

with w_r the rank's wait on its host where dispatching its kernels takes longer than they run. Its energy is every
rank's dense part and every device's experts; its time by class the slowest rank's.
"""

from __future__ import annotations

from dataclasses import dataclass

from kernels.shapes import StepTemplate

# How a layer's tokens reach the experts: spread experts' all-to-alls, or split experts' all-gather and
# reduce-scatter.
EXCHANGES = ("all_to_all", "gather")


@dataclass(frozen=True)
class ExpertRanks:
    """The experts' side of a data-parallel replica: `system` (hw_models/system.py SystemModel of the ranks' devices
    and their link) runs `template` (the expert rows of every MoE layer on one device: spread or split over the
    devices) on each device, and in every one of `moe_layers` layers exchanges `B_per_token` bytes per token of a rank
    each way by `exchange` (EXCHANGES): all-to-alls of a token's copies to its experts' devices, or an all-gather and
    a reduce-scatter of its hidden state."""

    system: object
    template: StepTemplate
    B_per_token: float
    moe_layers: int
    exchange: str = "all_to_all"

    def __post_init__(self) -> None:
        if self.exchange not in EXCHANGES:
            raise ValueError(f"exchange: found {self.exchange!r}, allowed: {', '.join(EXCHANGES)}")

    @property
    def ranks(self) -> int:
        return self.system.tp

    def exchange_s(self, tokens: int) -> float:
        """One layer's two exchanges when the busiest rank has `tokens` tokens: its dispatch and combine all-to-alls
        (each rank's send buffer its tokens' copies), or the all-gather of every rank's tokens (each padded to the
        busiest rank's) and the reduce-scatter of their outputs (either's buffer the gathered tensor: hw_models/link.py
        convention)."""
        if not tokens:
            return 0.0
        system = self.system  # its link within a node, its node link between nodes (hw_models/nodes.py)
        if self.exchange == "all_to_all":
            return 2 * float(system.collective_time_s("all_to_all", tokens * self.B_per_token, self.ranks))
        gathered_B = tokens * self.ranks * self.B_per_token
        return float(system.collective_time_s("all_gather", gathered_B, self.ranks)
                     + system.collective_time_s("reduce_scatter", gathered_B, self.ranks))
