"""How well a latency-predicting router's predictions (sim/latency_prediction.py) match what the simulator then makes
of each request (corrected by what the router learned of each replica: sim/latency_prediction.py LearnedBias): a
fleet of one H100 and two L4s serving Llama-3-8B (examples/fleet.yaml's: 1,024-token prompts,
256-token answers, an SLO of 2 s TTFT and 100 ms TPOT), per device, the requests routed there with the median of their
predicted and simulated TTFT and TPOT and the median error of each request's prediction.

    python bench/predicted_latency.py [--rate 20] [--requests 2000] [--router predicted_latency_most]

The predictions are made when each request is routed, before the requests after it arrive: the error of a replica
packed to its limit is mostly theirs.
"""

from __future__ import annotations

import argparse

import numpy as np

import sim.routers
from explore.design_point import DesignPoint
from explore.evaluate import Evaluator
from sim.latency_prediction import predict_latency
from sim.serving_spec import ServingSpec
from workloads.requests import Fixed


def _recording(router: type[sim.routers.Router], picks: list) -> type[sim.routers.Router]:
    """`router`, recording each pick's device and the prediction that was made for it there."""

    class Recording(router):
        def choose(self, replicas, request):
            replica = super().choose(replicas, request)
            cached = replica.state.kv.chain_tokens(request.group, request.shareable_tokens, request.tree_nodes,
                                                   request.root)
            predicted = predict_latency(replica, request.prompt_tokens, min(cached, request.prompt_tokens - 1))
            learned = self.learned.get(id(replica))  # as the router corrected it, from what it has learned
            picks.append((replica.costs.device.name, learned.corrected(predicted) if learned else predicted))
            return replica

    return Recording


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, default=20.0, help="requests per second (default 20)")
    parser.add_argument("--requests", type=int, default=2000, help="requests (default 2000)")
    parser.add_argument("--router", default="predicted_latency_most", choices=[
        name for name, cls in sim.routers.ROUTERS.items() if issubclass(cls, sim.routers.PredictedLatency)])
    args = parser.parse_args()
    picks: list = []
    sim.routers.ROUTERS[args.router] = _recording(sim.routers.ROUTERS[args.router], picks)
    spec = ServingSpec(requests=args.requests, prompt=Fixed(tokens=1024), output=Fixed(tokens=256),
                       rate_per_s=args.rate, mixed_device="l4", mixed_replicas=2, router=args.router,
                       slo_ttft_s=2.0, slo_tpot_s=0.1)
    point = DesignPoint(model="llama-3-8b", device="h100-sxm", execution="engine", batch=spec.max_seqs, prompt=0,
                        output=0, serving=spec)
    result = Evaluator().evaluate(point).result
    records = result.records  # by request index, the order requests arrive and are routed in
    devices = np.array([device for device, _ in picks])
    predicted = {"ttft": np.array([p.ttft_s for _, p in picks]), "tpot": np.array([p.tpot_s for _, p in picks])}
    simulated = {"ttft": records.ttft_s, "tpot": records.tpot_s}
    print(f"{args.router} at {args.rate:g} req/s, {args.requests} requests: SLO attainment "
          f"{result.metrics()['slo_attainment']:.3f}")
    print(f"{'device':10} {'requests':>8}  {'metric':6} {'predicted':>10} {'simulated':>10} {'median error':>13}")
    for device in dict.fromkeys(devices):
        routed = devices == device
        for metric in ("ttft", "tpot"):
            guess, real = predicted[metric][routed], simulated[metric][routed]
            error = np.nanmedian((guess - real) / real)
            print(f"{device:10} {routed.sum():8d}  {metric:6} {np.median(guess) * 1e3:8.1f}ms "
                  f"{np.nanmedian(real) * 1e3:8.1f}ms {error:+12.1%}")


if __name__ == "__main__":
    main()
