"""Multi-LoRA serving knobs in a sweep's serving: section (sim/lora.py): they reach each point's spec and its results
columns, adapters cost time and KV blocks, bad values are one line with exit 2, and settings not modeled beside LoRA are
refused by name."""

from __future__ import annotations

import json

import pytest

from explore.cli import main
from explore.design_point import DesignPoint
from explore.results import read_results
from explore.sweep import load_sweep
from sim.serving_spec import ServingSpec
from tests.explore.test_serving_sweep import _serving_sweep as _sweep
from tests.explore.tiny_sweep import write_tiny_model

# The claims here are about rows, columns, messages and the time adapters cost, not about a report's figures.
pytestmark = pytest.mark.usefixtures("figures_undrawn")

SERVING = """  requests: 40
  prompt: {dist: uniform, low: 8, high: 64}
  output: {dist: uniform, low: 2, high: 32}
  rate: 400
  scheduler: chunked
  max_seqs: 16
  chunk_tokens: 64
"""


def test_a_sweep_runs_adapters_per_point_and_shows_their_columns(tmp_path):
    """0, 1 and 8 adapters (max_loras 2) of the tiny Llama: LoRA off keeps the row of a sweep without the knob; with
    adapters each iteration runs their GEMMs (slower), and 8 adapters over 2 slots make requests wait."""
    path = _sweep(tmp_path, SERVING + "  lora_adapters: [0, 1, 8]\n  max_loras: 2\n")
    assert sorted(p.serving.lora_adapters for p in load_sweep(path).points()) == [0, 1, 8]
    out = tmp_path / "out"
    assert main([path, "--out", str(out), "--quiet"]) == 0
    rows = {int(r["lora_adapters"] or 0): r for r in read_results(out)}  # empty where off
    assert int(rows[1]["max_loras"]) == int(rows[8]["max_loras"]) == 2 and rows[0]["max_loras"] in ("", None)
    plain = tmp_path / "plain"
    assert main([_sweep(tmp_path, SERVING), "--out", str(plain), "--quiet"]) == 0
    (without,) = read_results(plain)
    assert float(rows[0]["e2e_s"]) == float(without["e2e_s"])
    assert float(rows[1]["tpot_s"]) > float(rows[0]["tpot_s"])
    assert float(rows[8]["queue_mean_s"]) > float(rows[1]["queue_mean_s"])
    # One adapter loads once into its slot over the H100's host link: the tiny Llama's rank-16 adapter, 2 layers x 16 x
    # ((64 + 64) x 2 + (64 + 32) x 2 + (64 + 128) x 3) values x 2 B = 65,536 B, over PCIe 5.0 x16's 63.0 GB/s. 8
    # adapters over 2 slots load more often; without LoRA nothing loads.
    assert float(rows[1]["swap_s"]) == pytest.approx(65_536 / 63.0e9, rel=1e-12)
    assert float(rows[8]["swap_s"]) >= 8 * float(rows[1]["swap_s"]) and float(rows[0]["swap_s"]) == 0.0


def test_adapters_load_over_the_points_host_link(tmp_path):
    """The host_link knob names the link adapters load over, as it does for offloaded weights: the tiny Llama's rank-16
    adapter (65,536 B, above) loads once over PCIe 4.0 x16's 31.5 GB/s (16 GT/s x 16 lanes x 128/130 / 8), not the
    H100 preset's PCIe 5.0 x16."""
    path = _sweep(tmp_path, SERVING + "  lora_adapters: 1\n", "workload: {host_link: pcie4-x16}\n")
    out = tmp_path / "out"
    assert main([path, "--out", str(out), "--quiet"]) == 0
    (row,) = read_results(out)
    assert float(row["swap_s"]) == pytest.approx(65_536 / 31.5e9, rel=1e-12)


def test_a_host_link_lets_a_device_without_one_load_adapters():
    """A device whose preset names no host link loads adapters over the link the point's host_link knob names."""
    assert "lora" not in _point(dict(lora_adapters=4), device="neupims", knobs=(("host_link", "pcie4-x16"),)).unjudged()


@pytest.mark.parametrize(("setting", "message"), [
    ("lora_rank: 7", "serving.lora_rank: found 7"), ("max_loras: 0", "serving.max_loras: found 0"),
    ("lora_alpha: 1.5", "serving.lora_alpha: found 1.5"), ("lora_adapters: -2", "serving.lora_adapters: found -2")])
def test_bad_values_are_one_line(tmp_path, capsys, setting, message):
    adapters = "" if setting.startswith("lora_adapters") else "  lora_adapters: 4\n"
    path = _sweep(tmp_path, SERVING + f"{adapters}  {setting}\n")
    assert main(["check", path]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and message in err, err


def _point(serving: dict, **point) -> DesignPoint:
    spec = ServingSpec(rate_per_s=10.0, **serving)
    return DesignPoint(**{"model": "llama-3-8b", "device": "h100-sxm", "batch": spec.max_seqs, "prompt": 0,
                          "output": 0, **point}, serving=spec)


@pytest.mark.parametrize(("point", "words"), [
    (dict(model="mixtral-8x7b"), "a model with routed experts"),
    (dict(knobs=(("spec_draft", "llama-3.2-1b"),)), "spec_draft 'llama-3.2-1b'"),
    (dict(serving=dict(prefill_replicas=1)), "a prefill pool"),
    (dict(serving=dict(preemption="swap", swap_GBps=25.0)), "swap preemption"),
    (dict(device="neupims"), "device 'neupims', whose preset names no host link to load adapters over"),
])
def test_settings_not_modeled_beside_lora_are_refused(point, words):
    serving = point.pop("serving", {})
    reason = _point(dict(lora_adapters=4, **serving), **point).unjudged()
    assert reason.startswith("lora_adapters: found LoRA adapters with ") and words in reason, reason
    assert "lora" not in _point(serving, **point).unjudged()  # the same point without adapters


def test_a_cpu_holds_its_adapters_in_its_own_memory():
    """A CPU's memory is the host's: it runs adapters without a host link to load them over."""
    assert _point(dict(lora_adapters=4), device="ampere-altra").unjudged() == ""


def test_explore_run_takes_the_knobs_as_flags(tmp_path, capsys):
    """`explore run --serving` with --lora-adapters, --lora-rank, --max-loras and --lora-alpha: the adapters cost
    time over the same requests without them; a value or a model not modeled is one line naming the flag, exit 2."""
    flags = ["run", "--model", write_tiny_model(tmp_path), "--device", "h100-sxm", "--serving", "--prompt", "32",
             "--output", "8", "--rate", "200", "--requests", "20", "--json"]

    def metrics(*extra: str) -> dict:
        assert main([*flags, *extra]) == 0
        return json.loads(capsys.readouterr().out)

    plain = metrics()
    lora = metrics("--lora-adapters", "4", "--lora-rank", "32", "--max-loras", "2", "--lora-alpha", "0.5")
    assert lora["e2e_s"] > plain["e2e_s"] and lora["swap_s"] > plain["swap_s"] == 0.0
    assert main([*flags, "--lora-adapters", "4", "--lora-rank", "7"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--lora-rank: found 7" in err, err
    assert main([*flags[:2], "mixtral-8x7b", *flags[3:], "--lora-adapters", "4"]) == 2
    assert "--lora-adapters: found LoRA adapters with a model with routed experts" in capsys.readouterr().err


def test_explore_run_header_names_the_adapters(tmp_path, capsys):
    """The run's header says how many adapters of which rank, their draw and the slots, only where LoRA is on."""
    flags = ["run", "--model", write_tiny_model(tmp_path), "--device", "h100-sxm", "--serving", "--prompt", "32",
             "--output", "8", "--rate", "200", "--requests", "4"]
    assert main([*flags, "--lora-adapters", "4", "--lora-rank", "32", "--max-loras", "2", "--lora-alpha", "0.5"]) == 0
    assert ", 4 LoRA adapters of rank 32 (lora_alpha 0.5), the running requests holding at most 2 (max_loras)" in (
        capsys.readouterr().out)
    assert main(flags) == 0
    assert "LoRA" not in capsys.readouterr().out


def _rewrite(path: str, old: str, new: str) -> str:
    """`path`, its sweep's `old` replaced by `new` in the same file: a point's key holds its model's path."""
    with open(path) as f:
        text = f.read()
    with open(path, "w") as f:
        f.write(text.replace(old, new))
    return path


def test_lora_off_is_the_point_without_the_lora_knobs(tmp_path):
    """At lora_adapters 0 the rank, slots and draw change nothing: a grid crossing them there holds one design, whose
    key is the same sweep's point without any LoRA knob."""
    lora = "  lora_adapters: [0, 4]\n  max_loras: [1, 2]\n  lora_rank: 32\n"
    path = _sweep(tmp_path, SERVING + lora)
    points = load_sweep(path).points()
    off = {p.point_id for p in points if p.serving.lora_adapters == 0}
    (plain,) = load_sweep(_rewrite(path, lora, "")).points()
    assert off == {plain.point_id}
    assert len({p.point_id for p in points}) == 3


def test_a_lora_knob_left_unread_does_not_vary_in_the_report():
    """Rows of 0 adapters leave lora_rank empty (LoRA off reads none): rank 16 on every row with adapters is one value,
    so only lora_adapters and max_loras vary in the report's knobs by effect."""
    from explore.sensitivity import varying_knobs

    rows = [dict(lora_adapters="", lora_rank="", max_loras="", tokens_per_s=100.0),
            dict(lora_adapters=8, lora_rank=16, max_loras=2, tokens_per_s=80.0),
            dict(lora_adapters=8, lora_rank=16, max_loras=4, tokens_per_s=90.0)]
    assert [k for k in varying_knobs(rows) if "lora" in k] == ["lora_adapters", "max_loras"]


def test_one_adapter_is_the_point_without_its_draw(tmp_path, capsys):
    """With one adapter every request draws it whatever lora_alpha is: a grid crossing alpha there holds one design,
    whose key is the same sweep's one-adapter point without lora_alpha; an alpha out of (0, 1] is still refused."""
    alpha = "  lora_alpha: [0.5, 1.0]\n"
    path = _sweep(tmp_path, SERVING + "  lora_adapters: [1, 4]\n" + alpha)
    points = load_sweep(path).points()
    one = {p.point_id for p in points if p.serving.lora_adapters == 1}
    plain = {p.point_id for p in load_sweep(_rewrite(path, alpha, "")).points() if p.serving.lora_adapters == 1}
    assert one == plain and len(one) == 1
    assert len({p.point_id for p in points}) == 3
    assert main(["check", _rewrite(path, "  lora_adapters: [1, 4]\n", "  lora_adapters: 1\n  lora_alpha: 1.5\n")]) == 2
    assert "serving.lora_alpha: found 1.5" in capsys.readouterr().err
