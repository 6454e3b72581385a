"""Data-parallel attention as a design point runs it (`attention_parallel: data`: explore/evaluate.py, kernels/
data_parallel.py): what it refuses, in one line, and the memory of its replica against hand counts of the tiny
Mixtral's parameters and KV.

The tiny Mixtral: hidden 64, 2 layers, 4 heads of 16 and 2 KV heads, 4 experts of FFN 128 (2 per token), vocabulary
128. Per layer its attention holds 64 x 64 (q) + 2 x 64 x 32 (k, v) + 64 x 64 (o) = 12,288 parameters, each expert
3 x 64 x 128 = 24,576, the router 64 x 4 = 256, its two norms 128; the embedding and LM head 128 x 64 each and the
final norm 64. So 238,400 parameters in all, 196,608 of them the experts' and 41,792 the rest.
"""

from __future__ import annotations

import json
import math
from dataclasses import replace

import pytest

from explore.cli import main
from explore.design_point import DesignPoint
from explore.sweep import load_sweep
from sim.serving_spec import ServingSpec
from tests.explore.tiny_sweep import write_sweep
from workloads.errors import InputError
from workloads.requests import Fixed

EXPERT_PARAMS = 2 * 4 * 3 * 64 * 128
REST_PARAMS = 2 * (4096 + 2 * 2048 + 4096 + 256 + 128) + 2 * 128 * 64 + 64
KV_B_PER_TOKEN = 2 * 2 * 2 * 16 * 2  # 2 layers x K and V x 2 KV heads x 16 dims x 2 B


@pytest.fixture(scope="module")
def tiny_moe(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("tiny-moe") / "config.json"
    path.write_text(json.dumps({
        "model_type": "mixtral", "architectures": ["MixtralForCausalLM"], "hidden_size": 64,
        "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
        "vocab_size": 128, "max_position_embeddings": 2048, "rms_norm_eps": 1e-5, "torch_dtype": "bfloat16",
        "hidden_act": "silu", "num_local_experts": 4, "num_experts_per_tok": 2}))
    return str(path)


SPEC = ServingSpec(requests=6, rate_per_s=50.0, prompt=Fixed(tokens=40), output=Fixed(tokens=4))


def _point(model: str, tp: int = 2, ep: int | None = None, serving: ServingSpec | None = SPEC, **knobs) -> DesignPoint:
    return DesignPoint(model=model, device="h100-sxm", batch=4 if serving is None else SPEC.max_seqs,
                       prompt=40 if serving is None else 0, output=4 if serving is None else 0, tp=tp,
                       ep=tp if ep is None else ep, serving=serving,
                       knobs=tuple(sorted({"attention_parallel": "data", **knobs}.items())))


def test_the_parameter_counts_the_memory_checks_rest_on(tiny_moe):
    from workloads.model_config import load_model_config

    config = load_model_config(tiny_moe)
    assert config.param_count() == EXPERT_PARAMS + REST_PARAMS == 238_400


@pytest.mark.parametrize("tp", [2, 4])
def test_each_rank_holds_the_weights_but_the_experts_and_its_sequences_kv_once(tiny_evaluator, tiny_moe, tp):
    """Data-parallel ranks hold the experts once and everything else on every device, 2 B a parameter; a sequence's
    KV lies whole on its rank, where tensor parallelism over 4 devices copies each of the 2 KV heads twice."""
    data = tiny_evaluator.evaluate(_point(tiny_moe, tp)).result.memory
    tensor = tiny_evaluator.evaluate(_point(tiny_moe, tp, attention_parallel="tensor")).result.memory
    assert data.weights_B == pytest.approx(2 * (EXPERT_PARAMS + tp * REST_PARAMS), rel=1e-9)
    assert tensor.weights_B == pytest.approx(2 * (EXPERT_PARAMS + REST_PARAMS), rel=1e-9)
    assert data.kv_block_B == pytest.approx(KV_B_PER_TOKEN * SPEC.block_tokens, rel=1e-12)
    assert tensor.kv_block_B == pytest.approx(KV_B_PER_TOKEN * SPEC.block_tokens * max(1, tp // 2), rel=1e-12)


@pytest.mark.parametrize("wider", ["attn_weight_bits", "head_bits"])
def test_each_rank_holds_its_copy_of_the_rest_at_the_rest_s_own_bits(tiny_evaluator, tiny_moe, wider):
    """A mixed format whose attention (or embedding and head) is wider than the experts: the part every rank copies
    grows by its extra bytes on each of tp ranks, where tensor parallelism holds it once. So widening it from 4 to 16
    bits adds tp times as much under data as under tensor parallelism."""
    tp = 4

    def weights_B(layout: str, **knobs) -> float:
        point = replace(_point(tiny_moe, tp, attention_parallel=layout, **knobs), weight_bits=4)
        return tiny_evaluator.evaluate(point).result.memory.weights_B

    added = {layout: weights_B(layout, **{wider: 16}) - weights_B(layout) for layout in ("tensor", "data")}
    assert added["tensor"] > 0
    assert added["data"] == pytest.approx(tp * added["tensor"], rel=1e-9)


def test_a_run_serves_every_request_on_both_ranks(tiny_evaluator, tiny_moe):
    evaluation = tiny_evaluator.evaluate(_point(tiny_moe))
    result = evaluation.result
    assert len(result.records.finish_s) == SPEC.requests
    assert set(result.iterations.replica.tolist()) == {0.0, 1.0}
    assert result.iterations.replica_names == ("serve (h100-sxm) replica 0 rank 0", "serve (h100-sxm) replica 0 rank 1")
    assert evaluation.metrics["tdp_W"] == pytest.approx(2 * 700.0)  # both devices: H100 SXM's 700 W each


@pytest.mark.parametrize(("where", "knobs", "message"), [
    ("static", {}, "attention_parallel: found 'data' in a static batch, allowed: tensor (data-parallel ranks"),
    ("dense", {}, "attention_parallel: found 'data' for "),
    ("tp 1", {}, "attention_parallel: found 'data' with tp 1 and ep 1, allowed: tensor, or data on two or more "
     "devices"),
])
def test_what_data_parallel_attention_refuses_is_one_line(tiny_evaluator, tiny_moe, tiny_config, where, knobs,
                                                         message):
    point = _point(tiny_moe, **knobs)
    if where == "static":
        point = _point(tiny_moe, serving=None, **knobs)
    elif where == "dense":
        point = _point(tiny_config, ep=1)
    elif where == "tp 1":
        point = _point(tiny_moe, tp=1)
    with pytest.raises(InputError) as err:
        tiny_evaluator.evaluate(point)
    assert message in str(err.value) and "\n" not in str(err.value), str(err.value)


@pytest.mark.parametrize(("fields", "knobs", "message"), [
    ({"pp": 2}, {}, "attention_parallel: found 'data' with pp 2, allowed: 1"),
    ({}, {"overlap": "token_split"}, "attention_parallel: found 'data' with overlap 'token_split', allowed: none or "
     "dual_batch"),
    ({}, {"allreduce": "custom"}, "attention_parallel: found 'data' with allreduce 'custom', allowed: nccl"),
])
def test_what_data_parallel_attention_does_not_model_is_not_run(tiny_evaluator, tiny_moe, fields, knobs, message):
    """Settings its ranks do not run beside it: the point is not run, its row saying why (DesignPoint.unjudged;
    grids of them: tests/explore/test_unrun_combinations.py)."""
    metrics = tiny_evaluator.evaluate(replace(_point(tiny_moe, **knobs), **fields)).metrics
    assert metrics["infeasible_reason"].startswith(message), metrics["infeasible_reason"]
    assert math.isnan(metrics["ttft_s"])


def test_the_router_picks_among_the_ranks_of_one_replica(tmp_path, tiny_moe, capsys):
    """Each rank has its own requests, which the pool's router picks among: a 200-token prompt and two of 16 arrive
    together at a replica of two ranks; by requests the third joins the long prompt's rank, by pending tokens the
    short one's, so the mean TTFT moves with --router (without it the run is least_requests'). One replica routes."""
    trace = tmp_path / "three.csv"
    trace.write_text("arrival_s,prompt_tokens,output_tokens\n0,200,4\n0,16,4\n0,16,4\n")
    ttft = {}
    for router in ("least_requests", "least_tokens", None):
        assert main(["run", "--model", tiny_moe, "--device", "h100-sxm", "--tp", "2", "--ep", "2",
                     "--attention-parallel", "data", "--serving", "--trace", str(trace), "--arrival", "trace",
                     "--requests", "3", "--execution", "graphs", "--json",
                     *(["--router", router] if router else [])]) == 0, capsys.readouterr().err
        ttft[router] = json.loads(capsys.readouterr().out)["ttft_mean_s"]
    assert ttft[None] == ttft["least_requests"] != ttft["least_tokens"]


def test_a_sweep_keeps_the_router_of_a_data_parallel_replica(tmp_path, tiny_moe):
    """One replica of two data-parallel ranks has engines to route among: each router is a design of its own (with
    tensor-parallel attention the same replica has nothing to route, and its routers are one design)."""
    path = write_sweep(tmp_path, f"name: ranks\nmodel: {tiny_moe}\ndevice: h100-sxm\nexecution: graphs\n"
                                 f"parallel: {{tp: 2, ep: spread, attention_parallel: [tensor, data]}}\n"
                                 f"serving:\n  requests: 6\n  prompt: 32\n  output: 4\n  rate: 50\n"
                                 f"  router: [least_tokens, round_robin]\n")
    points = load_sweep(path).points()
    routers = {(p.knob("attention_parallel"), p.serving.router) for p in points}
    assert routers == {("tensor", None), ("data", "least_tokens"), ("data", "round_robin")}


def test_data_parallel_ranks_need_not_split_the_heads(tiny_evaluator, tiny_moe):
    """Ranks attend whole, so 8 of them serve the tiny Mixtral's 4 heads (tensor parallelism over 8 cannot split
    them): the run serves every request on eight ranks, and tensor parallelism there is refused in one line."""
    moe8 = tiny_moe.replace("config.json", "config8.json")
    with open(tiny_moe) as source, open(moe8, "w") as target:
        target.write(source.read().replace('"num_local_experts": 4', '"num_local_experts": 8'))
    result = tiny_evaluator.evaluate(_point(moe8, tp=8)).result
    assert len(result.records.finish_s) == SPEC.requests and len(set(result.iterations.replica.tolist())) > 1
    with pytest.raises(InputError, match="a divisor of .* 4 attention heads"):
        tiny_evaluator.evaluate(_point(moe8, tp=8, attention_parallel="tensor"))


def test_a_sweep_of_data_parallel_ranks_need_not_split_the_heads(tmp_path, tiny_moe, one_line_error):
    """A sweep whose every point attends data-parallel loads at tp 8 (experts split) over the tiny Mixtral's 4 heads;
    crossed with tensor parallelism, whose points would split them, it is refused in one line naming parallel.tp."""
    from explore.sweep import load_sweep

    def sweep(layouts: str) -> str:
        path = tmp_path / f"{layouts.replace(', ', '-')}.yaml"
        path.write_text(f"name: dp\nmodel: {tiny_moe}\ndevice: h100-sxm\nparallel: {{tp: 8, ep: split, "
                        f"attention_parallel: [{layouts}]}}\nserving: {{requests: 4, rate: 10, prompt: 40, "
                        f"output: 4}}\n")
        return str(path)

    assert load_sweep(sweep("data")).size() == 1
    where, rest = one_line_error(lambda: load_sweep(sweep("tensor, data")))
    assert "parallel.tp" in rest and "4 attention heads" in rest


@pytest.mark.parametrize("layout", ["data", "tensor"])
def test_a_rank_hands_its_sequences_kv_over_its_own_port_alone(tiny_evaluator, tiny_moe, tmp_path, layout):
    """A prefill pool hands a request's 40 prompt tokens of KV (256 B a token: 10,240 B) to the decode pool over
    kv_link, a what-if link of B = 0.1 GB/s and no latency. A data-parallel rank holds its sequences' KV whole, so its
    device's port alone sends it: 102.4 us at B, 51.2 us at 2B, 51.2 us apart. Tensor parallelism over 2 devices
    splits the KV heads, each device sending its half over its own port: 25.6 us apart."""
    def e2e_s(bandwidth_GBps: float) -> float:
        link = tmp_path / f"link-{bandwidth_GBps:g}.yaml"
        link.write_text(f"name: slow\ndescription: what-if\nbandwidth_GBps: {bandwidth_GBps}\nlatency_us: 0\n"
                        "source: a what-if\n")
        spec = replace(SPEC, requests=1, prefill_replicas=1, kv_link=str(link))
        point = _point(tiny_moe, serving=spec, attention_parallel=layout)
        return tiny_evaluator.evaluate(point).metrics["e2e_mean_s"]

    ports = 1 if layout == "data" else 2
    assert e2e_s(0.1) - e2e_s(0.2) == pytest.approx(40 * KV_B_PER_TOKEN / 2e8 / ports, rel=1e-6)
