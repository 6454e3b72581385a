"""A sweep run again on its folder after something changed: what it reads by path, its constraints, its report, or
a search's stored points; and a point asked twice runs once."""

from __future__ import annotations

from pathlib import Path

import pytest
from tiny_sweep import write_sweep, write_tiny_model

from explore import runner
from explore.cli import main
from explore.results import ResultsStore, read_rows
from explore.runner import columns_for
from explore.sweep import load_sweep

# The claims here are about rows, columns, messages and files, not about what a report's figure shows.
pytestmark = pytest.mark.usefixtures("figures_undrawn")


def _sweep(folder: Path, model: str, device: str, extra: str = "") -> str:
    path = folder / "sweep.yaml"
    path.write_text(f"name: rerun\nmodel: {model}\ndevice: {device}\n"
                    f"workload: {{batch: [1, 2], prompt: 16, output: 4}}\n{extra}")
    return str(path)


def _tpot(out: Path) -> list[float]:
    return [float(row["tpot_s"]) for row in read_rows(out / "results.csv")]


def test_an_edited_device_file_is_evaluated_again(tmp_path, capsys):
    """A device YAML named by path is part of each point's key with its contents: after an edit (lower bandwidth) the
    rerun evaluates its points again, as a fresh folder does, instead of keeping the first file's results."""
    model = write_tiny_model(tmp_path)
    device = tmp_path / "dev.yaml"
    device.write_text("base: h100-sxm\nname: h100-what-if\nmemory: {bandwidth_GBps: 6700}\n")
    sweep, out = _sweep(tmp_path, model, str(device), "execution: engine\n"), tmp_path / "out"
    assert main([sweep, "--out", str(out), "--quiet"]) == 0
    fast = _tpot(out)
    device.write_text("base: h100-sxm\nname: h100-what-if\nmemory: {bandwidth_GBps: 100}\n")
    capsys.readouterr()
    assert main([sweep, "--out", str(out), "--quiet"]) == 0
    assert "already stored" not in capsys.readouterr().err
    assert main([sweep, "--out", str(tmp_path / "fresh"), "--quiet"]) == 0
    slow = _tpot(tmp_path / "fresh")
    assert all(s > f for s, f in zip(slow, fast, strict=True))
    assert _tpot(out)[:2] == slow  # the edited file's rows first, in the sweep's order


def test_an_edited_config_in_a_model_folder_is_evaluated_again(tmp_path, capsys):
    """A model named by its folder (a Hugging Face download) reads the folder's config.json: after an edit (twice the
    layers) the rerun evaluates its points again instead of keeping the first config's results."""
    config = Path(write_tiny_model(tmp_path))  # tmp_path/tiny/config.json
    sweep, out = _sweep(tmp_path, str(config.parent), "h100-sxm", "execution: engine\n"), tmp_path / "out"
    assert main([sweep, "--out", str(out), "--quiet"]) == 0
    shallow = _tpot(out)
    config.write_text(config.read_text().replace('"num_hidden_layers": 2', '"num_hidden_layers": 4'))
    capsys.readouterr()
    assert main([sweep, "--out", str(out), "--quiet"]) == 0
    assert "already stored" not in capsys.readouterr().err
    assert all(deep > flat for deep, flat in zip(_tpot(out), shallow, strict=True))


def test_a_changed_constraint_judges_the_stored_rows_again(tmp_path):
    """meets_constraints in results.csv follows the constraint of the run that wrote it, stored rows included: the
    same column a fresh folder gets."""
    model = write_tiny_model(tmp_path)
    out = tmp_path / "out"
    assert main([_sweep(tmp_path, model, "h100-sxm", 'constraints: ["tpot_s <= 10"]\n'), "--out", str(out),
                 "--quiet"]) == 0
    assert {row["meets_constraints"] for row in read_rows(out / "results.csv")} == {"True"}
    tight = _sweep(tmp_path, model, "h100-sxm", 'constraints: ["tpot_s <= 1e-9"]\n')
    assert main([tight, "--out", str(out), "--quiet"]) == 0
    assert main([tight, "--out", str(tmp_path / "fresh"), "--quiet"]) == 0
    assert [row["meets_constraints"] for row in read_rows(out / "results.csv")] == ["False", "False"]
    assert read_rows(out / "results.csv") == read_rows(tmp_path / "fresh" / "results.csv")


def test_a_point_asked_twice_is_evaluated_once(tmp_path, monkeypatch):
    """A search may ask for one point twice in a batch: it is evaluated and counted once."""
    model = write_tiny_model(tmp_path)
    sweep = load_sweep(_sweep(tmp_path, model, "h100-sxm"))
    evaluated = []
    real = runner._evaluate_task

    def counting(blocks, evaluator=None):
        evaluated.extend(point_id for block in blocks for point_id in block.point_ids)
        return real(blocks, evaluator)

    monkeypatch.setattr(runner, "_evaluate_task", counting)
    point = sweep.points()[0]
    with ResultsStore(tmp_path / "out", columns_for(sweep), sweep.name) as table:
        run = runner._Run(sweep, table, None, runner.Evaluator(), None, 2)
        rows = run.evaluate([point, point])
    assert evaluated == [point.point_id] and len(rows) == 2 and run.feasible == 1


def test_each_serving_point_is_a_task_of_its_own(tmp_path):
    """A serving point is stored as it finishes: one to a task (a task's rows are stored when it ends)."""
    path = tmp_path / "serving.yaml"
    path.write_text("name: s\nmodel: llama-2-7b\ndevice: h100-sxm\nexecution: engine\n"
                    "serving: {requests: 20, rate: [1, 2, 3], prompt: 64, output: 8}\n")
    sweep = load_sweep(str(path))
    tasks = runner._tasks(list(sweep.points().blocks))
    assert [sum(block.size for block in task) for task in tasks] == [1, 1, 1]


def test_a_narrowed_sweep_shows_its_own_points(tmp_path, capsys):
    """Narrowed from 4 points to 2, a sweep's results.csv and `explore report DIR` hold its 2; the other 2 stay stored
    and a sweep widened again takes them back without evaluating them."""
    model = write_tiny_model(tmp_path)
    out = tmp_path / "out"
    assert main([_sweep(tmp_path, model, "[h100-sxm, l4]"), "--out", str(out), "--quiet"]) == 0
    narrow = _sweep(tmp_path, model, "h100-sxm")
    assert main([narrow, "--out", str(out), "--quiet"]) == 0
    assert len(read_rows(out / "results.csv")) == 2
    assert main(["report", str(out)]) == 0
    assert "2 design points" in (out / "report.md").read_text()
    capsys.readouterr()
    assert main([_sweep(tmp_path, model, "[h100-sxm, l4]"), "--out", str(out), "--quiet"]) == 0
    assert "all 4 design points already stored" in capsys.readouterr().err
    assert len(read_rows(out / "results.csv")) == 4


def test_explore_report_leaves_the_next_run_to_draw_its_own(tmp_path, capsys):
    """`explore report DIR` draws the report again without the sweep's file (no trace, no evaluator): the sweep's
    next run draws its own report rather than call that one up to date; so does a run whose figures were deleted."""
    model = write_tiny_model(tmp_path)
    out = tmp_path / "out"
    narrow = _sweep(tmp_path, model, "h100-sxm")
    assert main([narrow, "--out", str(out), "--quiet"]) == 0
    assert main(["report", str(out)]) == 0
    capsys.readouterr()
    assert main([narrow, "--out", str(out), "--quiet"]) == 0
    assert "up to date" not in capsys.readouterr().err
    assert main([narrow, "--out", str(out), "--quiet"]) == 0
    assert "up to date" in capsys.readouterr().err
    for figure in (out / "figures").glob("*.png"):
        figure.unlink()
    assert main([narrow, "--out", str(out), "--quiet"]) == 0
    assert "up to date" not in capsys.readouterr().err and any((out / "figures").glob("*.png"))


@pytest.mark.parametrize("redraw", [["--force-report"], ["report"]], ids=["force-report", "explore-report"])
def test_a_report_cut_short_by_a_kill_is_drawn_again(tmp_path, capsys, monkeypatch, redraw):
    """A command killed while it writes the report over one drawn from the same results (the sweep with
    --force-report, or `explore report DIR`) leaves no stamp calling the half-written report up to date: the sweep's
    next run draws the whole report again."""
    model = write_tiny_model(tmp_path)
    out = tmp_path / "out"
    sweep = _sweep(tmp_path, model, "h100-sxm")
    assert main([sweep, "--out", str(out), "--quiet"]) == 0
    whole = (out / "report.md").read_text()
    write_text = Path.write_text

    def killed_in_report_md(path: Path, text: str, *args, **kwargs):
        if path.name != "report.md":
            return write_text(path, text, *args, **kwargs)
        write_text(path, text[:len(text) // 2], *args, **kwargs)
        raise KeyboardInterrupt  # the kill: the command runs nothing after it

    with monkeypatch.context() as patched:
        patched.setattr(Path, "write_text", killed_in_report_md)
        command = ["report", str(out)] if redraw == ["report"] else [sweep, "--out", str(out), "--quiet", *redraw]
        assert main(command) == 130
    assert (out / "report.md").read_text() == whole[:len(whole) // 2]
    capsys.readouterr()
    assert main([sweep, "--out", str(out), "--quiet"]) == 0
    assert "up to date" not in capsys.readouterr().err
    assert (out / "report.md").read_text() == whole


@pytest.mark.parametrize("strategy", ["random"])
def test_a_search_says_it_resumes(tmp_path, capsys, strategy):
    model = write_tiny_model(tmp_path)
    sweep = _sweep(tmp_path, model, "[h100-sxm, l4, a100-sxm-80gb]",
                   f"search: {{strategy: {strategy}, budget: 3, seed: 1}}\n")
    out = tmp_path / "out"
    assert main([sweep, "--out", str(out), "--quiet"]) == 0
    capsys.readouterr()
    assert main([sweep, "--out", str(out), "--quiet"]) == 0
    assert "resuming: 3 design points stored" in capsys.readouterr().err


def test_a_range_of_one_value_is_refused(tmp_path, capsys):
    model = write_tiny_model(tmp_path)
    sweep = _sweep(tmp_path, model, "h100-sxm",
                   "overrides: {device.memory.bandwidth_GBps: {range: [1000, 1000], steps: 3}}\n")
    assert main(["check", sweep]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "sweep.yaml:5: overrides.device.memory.bandwidth_GBps: range: found [1000, 1000] with steps: 3" in line


def test_files_beside_the_sweep_are_found_from_anywhere(tmp_path, monkeypatch):
    """A sweep naming a device YAML and a model config.json by paths relative to its own folder loads from another
    working folder; the same names from the working folder still win where they exist there."""
    folder = tmp_path / "project"
    folder.mkdir()
    write_tiny_model(folder)  # folder/tiny/config.json
    (folder / "dev.yaml").write_text("base: h100-sxm\nname: h100-what-if\nmemory: {bandwidth_GBps: 6700}\n")
    sweep_path = _sweep(folder, "tiny/config.json", "dev.yaml")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    sweep = load_sweep(sweep_path)
    assert sweep.spec.device == str(folder / "dev.yaml") and sweep.spec.model == str(folder / "tiny" / "config.json")
    monkeypatch.chdir(folder)
    assert load_sweep("sweep.yaml").spec.device == "dev.yaml"


def test_a_resumed_run_counts_only_its_own_points_in_the_eta(tmp_path, tiny_config, tiny_evaluator):
    """Resumed with 2 of 4 points stored, the run evaluates 2: each progress report counts only those in its rate,
    so the ETA is the points left times the time each new one took (the stored ones took none of it). Counting
    the stored rows too made a run resumed at 12 of 18 serving points show 'ETA 0s' with 4 s to go."""
    sweep = _sweep(tmp_path, tiny_config, "h100-sxm", "format: {weight_bits: [16, 8]}\nexecution: engine\n")
    full = load_sweep(sweep)
    half = tmp_path / "half.yaml"
    half.write_text(Path(sweep).read_text().replace("batch: [1, 2]", "batch: [1]"))
    out = tmp_path / "out"
    runner.run_sweep(load_sweep(str(half)), out, evaluator=tiny_evaluator)
    reports: list[runner.Progress] = []
    runner.run_sweep(full, out, evaluator=tiny_evaluator, on_progress=reports.append)
    assert reports[-1].done == reports[-1].total == 4 and reports[-1].evaluated == 2
    for p in reports:
        assert p.evaluated == p.done - 2
        assert p.eta_s == pytest.approx((4 - p.done) * p.elapsed_s / p.evaluated)
    # By hand: 12 of 18 stored, one point evaluated in 1 s: 5 left at 1 s each.
    assert runner.Progress(13, 18, 13, 100.0, 1.0, evaluated=1).eta_s == pytest.approx(5.0)


def test_a_search_budget_past_the_space_says_it_takes_every_point(tmp_path, tiny_config, capsys):
    sweep = _sweep(tmp_path, tiny_config, "h100-sxm", "execution: engine\nobjectives: {minimize: [tpot_s]}\n"
                   "search: {strategy: tpe, budget: 10, seed: 1}\n")
    assert main([sweep, "--out", str(tmp_path / "out"), "--quiet"]) == 0
    assert "tpe search over 2 design points, budget 10 (every point)" in capsys.readouterr().err


def test_the_last_line_counts_the_points_meeting_the_constraints(tmp_path, tiny_config, capsys):
    """No point can reach a TTFT of a nanosecond: the run's last lines say none meets the constraints (the report
    says so too), not only that every point is feasible; a limit every point meets counts them all."""
    for limit, meeting in (("1e-9", 0), ("100", 2)):
        sweep = _sweep(tmp_path, tiny_config, "h100-sxm", f"execution: engine\nconstraints: ['ttft_s <= {limit}']\n")
        assert main([sweep, "--out", str(tmp_path / f"out-{meeting}"), "--quiet"]) == 0
        assert f"2 design points (2 feasible, {meeting} meet the constraints)" in capsys.readouterr().out


def test_a_search_stopping_short_of_its_budget_says_so(tmp_path, tiny_config, tiny_evaluator, monkeypatch, caplog):
    """A search whose proposals keep repeating visited points stops short of its budget (TPE at 54 of a 56-point
    space stopped at 50): the progress line ends and a notice says how many points it reached, instead of the
    budget silently not being met."""
    from explore import search

    sweep = load_sweep(_sweep(tmp_path, tiny_config, "h100-sxm", "format: {weight_bits: [16, 8]}\nexecution: engine\n"
                              "objectives: {minimize: [tpot_s]}\nsearch: {strategy: tpe, budget: 4, seed: 1}\n"))
    monkeypatch.setitem(search.STRATEGIES, "tpe", lambda sweep, evaluate: evaluate(list(sweep.points())[:2]))
    reports: list[runner.Progress] = []
    rows = runner.run_sweep(sweep, tmp_path / "out", evaluator=tiny_evaluator, on_progress=reports.append)
    assert len(rows) == 2
    assert reports[-1].finished and (reports[-1].done, reports[-1].total) == (2, 4)
    assert "the tpe search stopped at 2 design points of its budget of 4" in caplog.text


def test_a_knob_added_to_a_sweep_is_named_as_what_changed_its_columns(tmp_path, capsys):
    """A knob the first run did not set (head_bits) adds a results column: the rerun on the same folder is refused,
    naming the column and the knobs set as a cause (it named only overrides, derived knobs and constraints)."""
    model = write_tiny_model(tmp_path)
    out = tmp_path / "out"
    assert main([_sweep(tmp_path, model, "h100-sxm", "format: {weight_bits: 4}\n"), "--out", str(out), "--quiet"]) == 0
    capsys.readouterr()
    sweep = _sweep(tmp_path, model, "h100-sxm", "format: {weight_bits: 4, head_bits: [0, 16]}\n")
    assert main([sweep, "--out", str(out), "--quiet"]) == 2
    (err,) = [line for line in capsys.readouterr().err.splitlines() if line.startswith("explore: error:")]
    assert "+head_bits" in err and "the knobs it sets" in err


def test_a_rerun_says_when_another_version_of_the_cost_model_priced_its_rows(tmp_path, capsys, monkeypatch):
    """A point's id holds its inputs, not the code that priced it: rows stored by another version of the cost model
    (explore/model_version.py) keep its numbers on a rerun, and the rerun says so; one by the same version does not."""
    from explore import model_version

    model = write_tiny_model(tmp_path)
    sweep, out = _sweep(tmp_path, model, "h100-sxm"), tmp_path / "out"
    monkeypatch.setattr(model_version, "model_digest", lambda: "0123456789abcdef")
    monkeypatch.setattr("explore.results.model_digest", model_version.model_digest)
    monkeypatch.setattr("explore.rerun.model_digest", model_version.model_digest)
    assert main([sweep, "--out", str(out), "--quiet"]) == 0
    assert main([sweep, "--out", str(out), "--quiet"]) == 0
    assert "another version of the cost model" not in capsys.readouterr().err
    monkeypatch.setattr("explore.results.model_digest", lambda: "fedcba9876543210")
    monkeypatch.setattr("explore.rerun.model_digest", lambda: "fedcba9876543210")
    assert main([sweep, "--out", str(out), "--quiet"]) == 0
    err = capsys.readouterr().err
    assert "note: rows stored in" in err and "another version of the cost model too (its code or data changed " \
        "since: 0123456789abcdef); every stored row keeps the numbers it gave" in err


def test_a_rerun_that_prices_nothing_leaves_no_version_behind(tmp_path, capsys, monkeypatch):
    """A rerun by another version that finds every point stored prices no row: back at the first version, the folder
    holds only that version's rows, and a rerun says nothing of another."""
    model = write_tiny_model(tmp_path)
    sweep, out = _sweep(tmp_path, model, "h100-sxm"), tmp_path / "out"
    for digest in ("0123456789abcdef", "fedcba9876543210", "0123456789abcdef"):
        monkeypatch.setattr("explore.results.model_digest", lambda digest=digest: digest)
        monkeypatch.setattr("explore.rerun.model_digest", lambda digest=digest: digest)
        assert main([sweep, "--out", str(out), "--quiet"]) == 0
    err = capsys.readouterr().err
    assert err.count("another version of the cost model") == 1 and "since: 0123456789abcdef)" in err


def test_a_random_search_past_the_grids_designs_says_the_rest_repeat_one(tmp_path, tiny_config, tiny_evaluator,
                                                                         caplog):
    """prefill_replicas [0, 1] crossed with three prefill pool power caps: 6 grid points, 4 designs (without a prefill
    pool there is no cap to change). A budget of 5 evaluates the 4 and says that the grid holds no other design, not
    that proposals kept repeating (a random search proposes nothing)."""
    sweep = load_sweep(write_sweep(tmp_path, f"name: pool\nmodel: {tiny_config}\ndevice: h100-sxm\nexecution: engine\n"
                                   "serving: {requests: 4, prompt: 16, output: 4, rate: 4, prefill_replicas: [0, 1]}\n"
                                   "overrides: {prefill_device.power.cap_W: [300, 500, 700]}\n"
                                   "objectives: {minimize: [tpot_s]}\n"
                                   "search: {strategy: random, budget: 5, seed: 1}\n"))
    rows = runner.run_sweep(sweep, tmp_path / "out", evaluator=tiny_evaluator)
    assert len({row["point_id"] for row in rows}) == 4
    assert "the random search stopped at 4 design points of its budget of 5: the grid's 6 points hold no other " \
           "design" in caplog.text
    assert "kept repeating" not in caplog.text


def test_a_resumed_run_returns_rows_as_a_fresh_one_and_as_stored(tmp_path, tiny_config, tiny_evaluator):
    """Resumed with 2 of 4 points stored, every row the run returns (what its report is drawn from) has the sweep's
    results columns alone, as the stored rows read back: the rows evaluated in the run carried every knob at its
    default besides (tp, weight_type, kv_budget, ...), so the report of a sweep resumed after Ctrl-C saw those knobs
    vary between default and unset, and put 40-odd of them in its tables and sensitivity figure."""
    sweep = _sweep(tmp_path, tiny_config, "h100-sxm", "format: {weight_bits: [16, 8]}\nexecution: engine\n")
    half = tmp_path / "half.yaml"
    half.write_text(Path(sweep).read_text().replace("batch: [1, 2]", "batch: [1]"))
    resumed, fresh = tmp_path / "resumed", tmp_path / "fresh"
    runner.run_sweep(load_sweep(str(half)), resumed, evaluator=tiny_evaluator)
    rows = runner.run_sweep(load_sweep(sweep), resumed, evaluator=tiny_evaluator)
    columns = columns_for(load_sweep(sweep))
    assert [list(row) for row in rows] == [columns] * 4
    assert rows == runner.run_sweep(load_sweep(sweep), fresh, evaluator=tiny_evaluator)
    with ResultsStore(resumed, columns, "rerun") as table:
        assert rows == table.rows()
