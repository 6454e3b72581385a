"""N-gram speculation on design points (spec_draft ngram, sim/speculative.py NGRAM, through explore/evaluate.py): no
drafter, the target verifying k + 1 tokens of each sequence whose lookup found a match (ngram_match of its steps) and
one of the others. Invariants on the tiny Llama, static batches and serving runs, a sweep run and bad input."""

from __future__ import annotations

import csv
from dataclasses import replace

import pytest

from explore.cli import main
from explore.design_point import DesignPoint
from tests.explore.test_speculative_points import served_together
from tests.explore.tiny_sweep import write_sweep

pytestmark = pytest.mark.usefixtures("figures_undrawn")


def point(model: str, execution: str = "engine", **knobs) -> DesignPoint:
    return DesignPoint(model=model, device="h100-sxm", batch=4, prompt=200, output=33, execution=execution,
                       knobs=tuple(sorted(knobs.items())))


def tpot(evaluator, model: str, execution: str = "engine", **knobs) -> float:
    return evaluator.evaluate(point(model, execution, **knobs)).metrics["tpot_s"]


def test_no_match_decodes_as_no_speculation(tiny_config, tiny_evaluator):
    """ngram_match 0: every step verifies no drafts and computes one token a sequence, so the 32 decode tokens take
    32 one-token passes, as the plain point's 32 decode steps do (launched alike, eager: within 1%). A serving engine
    runs them as passes of unequal query lengths (a uniform decode verifies k + 1 tokens a sequence), never faster
    than the plain point's decodes from full graphs."""
    spec = tiny_evaluator.speculation(point(tiny_config, spec_draft="ngram", spec_tokens=4, acceptance=0.8,
                                            ngram_match=0.0))
    assert spec.tokens_per_step == 1.0
    knobs = {"spec_draft": "ngram", "spec_tokens": 4, "acceptance": 0.8, "ngram_match": 0.0}
    assert tpot(tiny_evaluator, tiny_config, "eager", **knobs) == pytest.approx(
        tpot(tiny_evaluator, tiny_config, "eager"), rel=0.01)
    assert tpot(tiny_evaluator, tiny_config, **knobs) >= tpot(tiny_evaluator, tiny_config)


def test_the_verification_computes_k_plus_one_tokens_of_the_matched_share_and_one_of_the_rest(tiny_config,
                                                                                                tiny_evaluator):
    """At acceptance 0 every step yields one token whatever the match share, so the decode takes the same 32 steps
    and only the pass differs: of batch x (m (k + 1) + (1 - m)) tokens, priced as m of the verification of k + 1 = 5
    tokens a sequence and 1 - m of the one-token decode. Launched alike (eager), TPOT is linear in m between the two
    ends; a serving engine runs the pass from a full graph only where all 4 sequences matched (m^4), else as a pass
    of unequal query lengths, which costs the tiny host-bound model more: above that line."""
    knobs = {"spec_draft": "ngram", "spec_tokens": 4}
    for execution, above in (("eager", 0.0), ("engine", 1e-9)):
        ends = [tpot(tiny_evaluator, tiny_config, execution, **knobs, ngram_match=m) for m in (0.0, 1.0)]
        for m in (0.25, 0.5, 0.75):
            line = (1 - m) * ends[0] + m * ends[1]
            got = tpot(tiny_evaluator, tiny_config, execution, **knobs, ngram_match=m)
            assert got == pytest.approx(line, rel=1e-9) if not above else got > line * (1 + above)
    # The verification's tables: the LM head over 4 x 5 rows, the plain decode's over 4 (hidden 64, vocabulary 128).
    p = replace(point(tiny_config, spec_draft="ngram", spec_tokens=4, ngram_match=0.5), execution="eager")
    tables = tiny_evaluator.speculative_tables(p, tiny_evaluator.point_tables(p, tiny_evaluator.point_device(p)))
    (verify_head,) = [k for k in tables.verify.kernels if k.module == "lm_head"]
    (plain_head,) = [k for k in tables.plain.kernels if k.module == "lm_head"]
    assert (verify_head.flops, plain_head.flops) == (2 * 4 * 5 * 64 * 128, 2 * 4 * 64 * 128)


def test_never_faster_than_a_free_draft_that_always_matches(tiny_config, tiny_evaluator):
    """A lower match share only takes away drafts: TPOT never falls below ngram_match 1's (a drafter that costs
    nothing and drafts every step), and falls as the share grows; at match 1 n-gram drafts beat Medusa heads, which
    draft alike but compute their heads, and beat no speculation at acceptance 0.8."""
    knobs = {"spec_draft": "ngram", "spec_tokens": 4, "acceptance": 0.8}
    tpots = [tpot(tiny_evaluator, tiny_config, **knobs, ngram_match=m) for m in (0.0, 0.25, 0.5, 0.75, 1.0)]
    assert tpots == sorted(tpots, reverse=True)
    assert tpots[-1] < tpot(tiny_evaluator, tiny_config, **knobs | {"spec_draft": "medusa"})
    assert tpots[-1] < tpot(tiny_evaluator, tiny_config)


@pytest.mark.parametrize(("match", "passes"), [(1.0, 1 + 1), (0.5, 3 + 2), (0.0, 1 + 1)])
def test_a_pass_no_step_runs_is_not_priced(tiny_config, tiny_evaluator, monkeypatch, match, passes):
    """A static batch of 4 prices three passes a step with n-gram drafts, each weighted by the share of steps that
    runs it: the verification as a uniform decode (all 4 matched, m^4), the same in the mode of unequal query lengths
    (m - m^4) and the plain decode (1 - m); the tail's one sequence prices the same three (m, m - m = 0, 1 - m). Those
    of weight 0 are not priced (before, all six were, scaled by 0): at m = 1 the verification alone, 1 + 1 passes; at
    0.5 all but the one sequence's mixed pass, 3 + 2; at 0 the plain decode alone, 1 + 1."""
    import sim.speculative as speculative

    priced, original = [], speculative._pass
    monkeypatch.setattr(speculative, "_pass", lambda *args: priced.append(args) or original(*args))
    tiny_evaluator.evaluate(point(tiny_config, spec_draft="ngram", spec_tokens=4, acceptance=0.8, ngram_match=match))
    assert len(priced) == passes


def test_a_static_batch_finishes_as_its_sequences_served_together_do(tiny_evaluator, tmp_path):
    """The closed form at match 0.5 (a step yields E = (1 - 0.6^5) / 0.4 tokens half the time, one otherwise, and
    its pass is half verification, half plain decode) against the serving simulation of the same batch on Llama-2-7B:
    32 requests arriving at once on the static scheduler, each drawing its matches and acceptances, five seeds.
    Tokens/s, decode tokens/s and TPOT agree within 3% (1.4% at most when written). On the tiny model, whose passes are
    bound by their launches, the served batch is 13% slower: its iteration prices the attention of the decodes
    without a match (Batch.short, as chunks) apart from the others', kernels the closed form does not count."""
    model, batch, prompt, output = "llama-2-7b", 32, 200, 96
    knobs = (("acceptance", 0.6), ("ngram_match", 0.5), ("spec_draft", "ngram"), ("spec_tokens", 4))
    static = tiny_evaluator.evaluate(DesignPoint(model=model, device="h100-sxm", batch=batch, prompt=prompt,
                                                 output=output, execution="engine", knobs=knobs)).metrics
    served = served_together(tiny_evaluator, model, knobs, batch, prompt, output, tmp_path)
    for name in ("tokens_per_s", "decode_tokens_per_s", "tpot_s"):
        assert static[name] == pytest.approx(served[name], rel=0.03), name


def test_a_sweep_runs_ngram_points_static_and_served(tiny_config, tmp_path, capsys):
    """explore run over spec_draft ['', ngram] and ngram_match [0.5, 1]: every point feasible, the speculating ones
    faster a token than the plain one at acceptance 0.8, the matching one fastest; and a served point runs."""
    from explore.runner import run_sweep
    from explore.sweep import load_sweep

    path = write_sweep(tmp_path, f"name: s\nmodel: {tiny_config}\ndevice: h100-sxm\nexecution: engine\n"
                                 "workload: {batch: 2, prompt: 64, output: 17, spec_draft: ['', ngram], "
                                 "spec_tokens: 3, acceptance: 0.8, ngram_match: [0.5, 1.0]}\n")
    run_sweep(load_sweep(path), tmp_path / "out")
    with open(tmp_path / "out" / "results.csv") as f:
        rows = [r for r in csv.DictReader(f) if r["fits_in_memory"] == "True"]
    speculating = {float(r["ngram_match"]): float(r["tpot_s"]) for r in rows if r["spec_draft"] == "ngram"}
    plain = [float(r["tpot_s"]) for r in rows if not r["spec_draft"]]
    assert set(speculating) == {0.5, 1.0} and plain
    assert speculating[1.0] < speculating[0.5] < min(plain)
    capsys.readouterr()
    served = tmp_path / "served.yaml"
    served.write_text(f"name: t\nmodel: {tiny_config}\ndevice: h100-sxm\nexecution: engine\n"
                      "workload: {spec_draft: ngram, spec_tokens: 3, acceptance: 0.8, ngram_match: 0.5}\n"
                      "serving: {requests: 8, rate: 50, prompt: 64, output: 16}\n")
    run_sweep(load_sweep(str(served)), tmp_path / "served")
    with open(tmp_path / "served" / "results.csv") as f:
        (row,) = list(csv.DictReader(f))
    assert row["fits_in_memory"] == "True" and float(row["tpot_s"]) > 0


@pytest.mark.parametrize(("knobs", "message"), [
    ("spec_draft: medusa, ngram_match: 0.5", "ngram_match: found 0.5 with spec_draft 'medusa', allowed: 1"),
    ("spec_draft: ngram, ngram_match: 1.5", "workload.ngram_match: found 1.5, allowed: "),
])
def test_bad_match_shares_get_one_line_and_exit_2(tiny_config, tmp_path, capsys, knobs, message):
    path = write_sweep(tmp_path, f"name: s\nmodel: {tiny_config}\ndevice: h100-sxm\nworkload: {{{knobs}}}\n")
    code = main(["check", path])
    if code == 0:  # a refusal of the point's combination comes from the run
        code = main(["run", "--model", tiny_config, "--device", "h100-sxm", "--spec-draft", "medusa",
                     "--ngram-match", "0.5"])
    assert code == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
