"""Notes on a sweep's settings that its author may not mean, said before it runs (`explore check` and a sweep's
start), and on an `explore run` point's what-ifs and power: none refuses anything, each says what a setting does."""

from __future__ import annotations

import itertools
from collections.abc import Iterable

from explore.design_point import FORMAT_FIELDS, canonical_format
from explore.knobs import KNOBS, knobs, off_where
from explore.pool_what_ifs import POOL_WHAT_IFS
from explore.quality import shipped_table
from explore.rows import count_label
from explore.run_support import LINK_PREFIX, link_what_ifs
from explore.schema import as_list
from explore.serving_settings import GATEWAY_KNOBS, SCHEDULER_SETTINGS, unread
from explore.sweep_serving import (
    AUTOSCALE_KNOBS,
    Parallel,
    node_link_readers_of,
    reads_metric,
    routes,
    scales,
)
from hw_models.link import default_link, load_link_model
from hw_models.registry import load_device, read_device_yaml
from kernels.block_sparse import SALE_DENSE_QUERIES
from kernels.formats import DTYPE_SHORT, IDLE_WHERE
from sim.autoscalers import forecasts
from sim.routers import ROUTERS
from sim.schedulers import SCHEDULERS
from workloads.errors import InputError
from workloads.model_config import load_model_config


def default_execution_note(sweep) -> str:
    """What a sweep that does not set `execution:` runs its GPUs as ('' where it sets it or has no GPU): PyTorch
    eager, whose host dispatch bounds small-batch steps, which a user comparing hardware may not mean."""
    if "execution" in sweep.spec.model_fields_set:
        return ""
    gpus = [d for d in sweep.dimensions()["device"] if read_device_yaml(d)[0].get("kind") == "gpu"]
    if not gpus:
        return ""
    return (f"execution not set: the GPUs ({', '.join(gpus)}) run as PyTorch eager, one kernel per op dispatched "
            f"from Python, which bounds small-batch steps whatever the GPU; `execution: engine` runs a serving "
            f"engine's kernels (decode from CUDA graphs), `execution: eager` keeps this and says so")


def idle_peak_note(paths, models) -> str:
    """What a what-if on a 16-bit peak changes where no model runs at that type ('' where one does): an fp16 model's
    16-bit math runs at compute.peak_TFLOPS.fp16, a bf16 model's at .bf16, so a what-if on the other changes
    nothing."""
    used = {DTYPE_SHORT[load_model_config(model).dtype] for model in models}  # the peaks their math runs at
    for path in paths:
        field = path.removeprefix("device.")
        dtype = field.removeprefix("compute.peak_TFLOPS.")
        if dtype != field and dtype in ("fp16", "bf16") and dtype not in used:
            kinds = ", ".join(sorted(t for t in used if t))
            return (f"{path} changes no point's math: {', '.join(models)} run{'s' * (len(models) == 1)} in {kinds}, "
                    f"priced at compute.peak_TFLOPS.{kinds.split(', ')[0]}")
    return ""


def fixed_peak_sm_note(paths) -> str:
    """What a what-if on a GPU's SM count means where no peak moves with it ('' where one does): the peaks are the
    chip's own fields, so more SMs at the same peaks are slower ones each, which a kernel too small to fill them
    feels (README, Sweep files)."""
    fields = {path.removeprefix("device.") for path in paths}
    if "compute.sm_count" not in fields or any(f.startswith("compute.peak_TFLOPS") for f in fields):
        return ""
    return ("compute.sm_count moves no peak: the chip's compute.peak_TFLOPS stay as they are, so more SMs are slower "
            "ones each and a GEMM or attention too small to fill them runs slower; for a bigger chip set or derive "
            "compute.peak_TFLOPS.* in proportion to the SMs")


def dense_prefill_note(point) -> str:
    """Where a point's prefill_kept is below 1 but none of its forwards has more than SALE's dense threshold of queries
    (kernels/block_sparse.py SALE_DENSE_QUERIES), so every prefill runs dense with no estimate and the knob changes
    nothing: a static batch's prompt that short, a serving run's longest prompt, or a chunked scheduler's chunks
    ('' otherwise)."""
    kept = point.knob("prefill_kept")
    if kept == 1.0:
        return ""
    if point.serving is None:
        longest, what = point.prompt, f"the {point.prompt:,}-token prompt"
    else:
        serving = point.serving
        longest = int(serving.request_set(rate_per_s=1.0).prompt_tokens.max())
        what = f"every prompt (at most {longest:,} tokens)"
        if serving.scheduler == "chunked" and serving.chunk_tokens < longest:
            longest, what = serving.chunk_tokens, f"every chunk of chunk_tokens {serving.chunk_tokens:,}"
    if longest > SALE_DENSE_QUERIES:
        return ""
    return (f"prefill_kept {kept:g} changes nothing here: {what} runs dense with no estimate, as SALE does a forward "
            f"of at most {SALE_DENSE_QUERIES:,} queries (kernels/block_sparse.py)")


def power_limit_note(avg_power_W: float, limit_W: float) -> str:
    """Where a point's average power is above what its hardware is rated to draw ('' where not): energy is priced per
    action (FLOP, MAC, bit moved) and static power x time, and nothing caps their sum at the TDP."""
    if not avg_power_W > limit_W:
        return ""
    return (f"average power {avg_power_W:.1f} W is above the {limit_W:g} W the hardware is rated for (power.tdp_W, "
            f"every device): the preset's energy per action at this rate adds up to more than its TDP, so either those "
            f"figures are high (see the preset's energy source) or the device would throttle, which is not modeled; "
            f"energy_per_token_J is priced as if it did not")


def mixed_links_note(sweep) -> str:
    """Where a calibrated sweep's links are priced by different models ('' where not): a link with measured NCCL
    collectives takes their fits, one without them its datasheet formula, which runs 45-85% under measured NCCL
    times, so a faster link may come out slower than a slower one."""
    parallel = sweep.spec.parallel
    if parallel is None or not sweep.spec.calibrated or max(as_list(parallel.tp)) * max(as_list(parallel.pp)) < 2:
        return ""
    return link_models_words({link for _, link in _device_links(sweep)})


def link_models_words(names) -> str:
    """Where the links named are priced by different models ('' where not): some by fits on measured NCCL
    collectives, others by their datasheet formula. A link that no longer loads (a report's YAML path since moved)
    is left out."""
    models = {}
    for name in names:
        try:
            models[name] = bool(load_link_model(name).fitted_on)
        except InputError:
            continue
    fitted, datasheet = sorted(n for n, f in models.items() if f), sorted(n for n, f in models.items() if not f)
    if not fitted or not datasheet:
        return ""
    return (f"links priced by different models: {', '.join(fitted)} by fits on measured NCCL collectives, "
            f"{', '.join(datasheet)} by the datasheet formula, which runs 45-85% under measured times; to rank links "
            f"like for like set `calibrated: false` (devices and links on their datasheets)")


def _device_links(sweep) -> list[tuple[str, str]]:
    """(device, link) pairs a sweep with a parallel section runs: each device over its default link where the sweep
    says default, and over every link it names."""
    return device_links((device, link) for link in as_list(sweep.spec.parallel.link)
                        for device in sweep.dimensions()["device"])


def device_links(pairs: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """(device, link) pairs, each once, with a link named 'default' replaced by the device's default link; a device
    that does not load or has none is left out (the point's own check says so)."""
    resolved = []
    for device, link in pairs:
        if link != "default":
            resolved.append((device, link))
            continue
        try:
            resolved.append((device, default_link(load_device(device).name)))
        except InputError:
            pass
    return list(dict.fromkeys(resolved))


def allreduce_fallback_note(sweep) -> str:
    """Where a sweep's all-reduce runs NCCL after all ('' where not), as the engines do: nvls over a link whose switch
    does not reduce, nvls or custom on more tp devices than the link joins."""
    parallel = sweep.spec.parallel
    if parallel is None:
        return ""
    chosen = [choice for choice in as_list(parallel.allreduce) if choice in ("custom", "nvls")]  # star runs anywhere
    tps = sorted(tp for tp in as_list(parallel.tp) if tp > 1)
    said = []
    for device, link in _device_links(sweep) if chosen and tps else ():
        try:
            spec = load_link_model(link).spec
        except InputError:  # a bad link: the point's own check says so
            continue
        for choice in chosen:
            beyond = [str(tp) for tp in tps if tp > spec.peer_devices]
            if choice == "nvls" and not spec.multimem:
                said.append(f"nvls on {device} ({spec.name}'s switch does not reduce)")
            elif beyond:
                said.append(f"{choice} at tp {', '.join(beyond)} on {device} ({spec.name} joins at most "
                            f"{spec.peer_devices} that reach each other)")
    if not said:
        return ""
    again = "the nccl points' design again" if "nccl" in as_list(parallel.allreduce) else "NCCL's all-reduce"
    return f"allreduce runs NCCL where it cannot run as asked: {'; '.join(said)}; those points price {again}"


def fitted_latency_note(fitted: list[str], keys) -> str:
    """Where a link.latency_us what-if (`keys`: the link fields a point or sweep sets) meets links whose collectives
    are fitted on measured NCCL data (`fitted`: their names; '' where none): a fit carries its own latencies, so the
    what-if reaches only the custom all-reduce's hops and what the datasheet model prices."""
    fitted = sorted(set(fitted))
    if "latency_us" not in keys or not fitted:
        return ""
    return (f"link.latency_us: {', '.join(fitted)} {'prices its' if len(fitted) == 1 else 'price their'} collectives "
            f"by fits on measured NCCL data, whose latencies are the fit's: the what-if changes only the custom "
            f"all-reduce's hops and collectives priced on the datasheet (a link file, or calibrated: false)")


def sweep_notes(sweep) -> list[str]:
    """What a sweep's settings do that its author may not mean, said before it runs (explore check, a sweep's start)."""
    notes = (default_execution_note(sweep), idle_peak_note(sweep.spec.overrides, sweep.dimensions()["model"]),
             fixed_peak_sm_note([*sweep.spec.overrides, *sweep.spec.derived]), mixed_links_note(sweep),
             idle_knobs_note(sweep), crossed_switch_note(sweep), idle_format_note(sweep),
             idle_what_if_note(sweep), unread_node_link_note(sweep), unpriced_goal_note(sweep),
             allreduce_fallback_note(sweep), _sweep_latency_note(sweep), contradictory_constraints_note(sweep),
             serving_seed_note(sweep), unmeasured_quality_note(sweep), unjudged_note(sweep))
    return [note for note in notes if note]


MAX_REASONS = 3  # the distinct reasons the note on points not run quotes; it counts the others


def unjudged_note(sweep) -> str:
    """How many points of a grid ask what their run cannot answer (explore/design_point.py DesignPoint.unjudged:
    rejected requests beside a slowdown SLO, a capacity search from zero replicas, settings not modeled together such
    as offloading beside speculative decoding or a hybrid attention placement on a GPU), recorded unevaluated with
    the reason as their infeasible_reason while the grid's other points run, each distinct reason with its count of
    points (the first MAX_REASONS quoted, the others counted); '' where none do. Searches are left out."""
    points: dict[str, int] = {}  # each distinct reason's points, in the grid's order
    for block, reason in sweep.unrun:
        points[reason] = points.get(reason, 0) + len(block)
    if not points:
        return ""
    said = next(iter(points)) if len(points) == 1 else "; ".join(
        f"{reason} ({count_label(count, 'point')})" for reason, count in list(points.items())[:MAX_REASONS])
    if len(points) > MAX_REASONS:
        rest = list(points.values())[MAX_REASONS:]
        said += f"; and {count_label(len(rest), 'more reason')} ({count_label(sum(rest), 'point')})"
    return (f"{sum(points.values())} of {sweep.size()} points are not run, each row's infeasible_reason saying why: "
            f"{said}")


def unread_seed_note(trace: str | None, arrival: str, prefix_groups: list, priority_fraction: list,
                     speculates: bool, routers: list, seed_name: str) -> str:
    """Where the user set a seed that nothing reads: a trace replayed at its own times, nothing drawn beside it (prefix
    groups, urgent requests, a speculative decode's accepted tokens, a router's picks); '' elsewhere."""
    if not trace or arrival != "trace" or any((groups or 1) > 1 for groups in prefix_groups) or speculates \
            or any(fraction is not None for fraction in priority_fraction) \
            or any(ROUTERS[router].draws for router in routers if router in ROUTERS):
        return ""
    return (f"{seed_name}: trace {trace!r} replays its own arrival times and lengths and nothing is drawn beside them "
            f"(no prefix groups, urgent requests, speculative decoding or router drawing its picks), so every seed "
            f"gives the same run")


def serving_seed_note(sweep) -> str:
    """unread_seed_note for a sweep whose serving: section sets its seed."""
    serving = sweep.spec.serving
    if serving is None or "seed" not in serving.model_fields_set:
        return ""
    return unread_seed_note(serving.trace, serving.arrival, as_list(serving.prefix_groups),
                            as_list(serving.priority_fraction), any(sweep.dimensions().get("spec_draft", [""])),
                            as_list(serving.router), "serving.seed")


def contradictory_constraints_note(sweep) -> str:
    """Where two constraints on one metric leave it no value (tpot_s <= 0.01 and tpot_s >= 0.02): no point can meet
    them, whatever the sweep evaluates."""
    constraints = sweep.constraints()
    for first, second in itertools.combinations(constraints, 2):
        if first.metric != second.metric:
            continue
        # A value both accept exists if one of the two bounds, or a point just inside them, meets both.
        lower = {c.bound for c in (first, second) if c.op in (">=", ">", "==")}
        upper = {c.bound for c in (first, second) if c.op in ("<=", "<", "==")}
        tries = lower | upper | ({(max(lower) + min(upper)) / 2} if lower and upper else set())
        if not any(first.accepts(value) and second.accepts(value) for value in tries):
            return (f"constraints: '{first.metric} {first.op} {first.bound:g}' and '{second.metric} {second.op} "
                    f"{second.bound:g}' leave {first.metric} no value: no design point can meet them")
    return ""


def unread_node_link_note(sweep) -> str:
    """A node link the sweep names that no point reads (_node_link_unread at every point's switches): every point's
    devices fit one node of its link (a list of node links crossed with points that span nodes is
    idle_what_if_note's)."""
    dims = sweep.dimensions()
    links = [link for link in dims.get("node_link", []) if link]
    if not links or len(dims.get("node_link", [])) > 1 or sweep.spec.search.strategy != "grid":
        return ""
    names = _node_link_switches(dims)
    if not all(_node_link_unread(dict(zip(names, combo, strict=True)), sweep.spec.serving)
               for combo in itertools.product(*(dims.get(name, [_UNSET.get(name, 1)]) for name in names))):
        return ""
    return (f"node_link {links[0]} changes nothing: every point's devices fit one node of its link (tp x pp at most "
            f"the link's domain_devices)")


# What a point's reading of its node link turns on (_node_link_unread), beside its link's what-ifs.
NODE_LINK_SWITCHES = ("device", "link", "tp", "pp", "prefill_replicas", "prefill_node_link", "kv_store_GB",
                      "kv_store_GBps", "mixed_device", "mixed_replicas", "mixed_node_link", "attention_device",
                      "attention_devices", "attention_placement")


def _node_link_switches(dims: dict) -> list[str]:
    return [*NODE_LINK_SWITCHES, *(key for key in dims if key.startswith(LINK_PREFIX))]


def _node_link_unread(combo: dict, serving=None, kind: str = "") -> bool:
    """Whether a point at `combo` (_node_link_switches' values) of a sweep with serving section `serving` has no pool
    of `kind` (prefill, mixed; '' its own), or one whose node link nothing reads, as Sweep.point and serving_spec judge
    it (node_link_readers_of)."""
    values = combo | {name: getattr(serving, name, None) for name in ("kv_link", "prefill_device", "attention_link")}
    return not node_link_readers_of(kind, combo["device"], combo["link"], combo["tp"], combo["pp"],
                                    link_what_ifs(combo), values)


def _sweep_latency_note(sweep) -> str:
    if sweep.spec.parallel is None or not sweep.spec.calibrated:
        return ""
    keys = {key.removeprefix(LINK_PREFIX) for key in sweep.link_override_values()}
    if "latency_us" not in keys:
        return ""
    fitted = []
    for _, link in _device_links(sweep):
        try:
            model = load_link_model(link)
        except InputError:  # a bad link: the point's own check says so
            continue
        fitted += [model.spec.name] if model.fitted_on else []
    return fitted_latency_note(fitted, keys)


# Metrics with a value only where the device publishes a price (explore/metrics.py), and the price field each reads.
PRICED_METRICS = {"cost_usd": "usd", "tokens_per_usd": "usd_per_hour", "usd_per_hour": "usd_per_hour"}


def unpriced_goal_note(sweep) -> str:
    """Objectives and constraints on a price metric where some of the sweep's devices publish no such price (and the
    sweep sets none by overrides or derived), or '': those points have no value, so no front or constraint takes
    them."""
    objectives = sweep.spec.objectives
    goals = dict.fromkeys([*objectives.minimize, *objectives.maximize, *(c.metric for c in sweep.constraints())])
    set_paths = {key.removeprefix("device.") for key in [*sweep.spec.overrides, *sweep.spec.derived]}
    said = []
    for name in (g for g in goals if g in PRICED_METRICS):
        field = PRICED_METRICS[name]
        if f"price.{field}" in set_paths:
            continue
        unpriced = [d for d in as_list(sweep.spec.device) if getattr(load_device(d).price, field) is None]
        if unpriced:
            said.append(f"{name} has no value on {', '.join(unpriced)} (no price.{field} in the preset)")
    if not said:
        return ""
    return (f"{'; '.join(said)}: those points are left out of every Pareto front and break every constraint on it; "
            f"`overrides: {{device.price.<field>: [...]}}` sets a price")


def unmeasured_quality_note(sweep) -> str:
    """Objectives and constraints on quality_delta where some of the sweep's models have no row in the quality table
    (explore/data/quality.csv), or '': their points have no figure but 16-bit dense's 0, so they break a constraint
    on it and are left out of its fronts."""
    objectives = sweep.spec.objectives
    goals = {*objectives.minimize, *objectives.maximize, *(c.metric for c in sweep.constraints())}
    if "quality_delta" not in goals:
        return ""
    measured = {row.model for row in shipped_table()}
    unmeasured = [m for m in sweep.dimensions()["model"] if load_model_config(m).name.lower() not in measured]
    if not unmeasured:
        return ""
    return (f"quality_delta: no published figure for {', '.join(unmeasured)} (explore/data/quality.csv; README, Model "
            f"quality per format): its points but 16-bit dense have none (NaN), so they break every constraint on "
            f"quality_delta and are left out of its Pareto fronts")


def sweep_default(name: str):
    """A knob's default as a sweep file spells it: the parallel: section's own words where it has them (link
    'default', ep 'split'), else the registry's."""
    field = Parallel.model_fields.get(name)
    return field.default if field is not None else KNOBS[name].default


def _read_by(knob) -> tuple[str, ...]:
    """What decides whether a point reads `knob` (Knob.read_where): its switches, and its model where the knob reads
    what not every model has (Knob.only_for)."""
    return (*knob.only_with, *(("model",) if knob.only_for is not None else ()))


def _unread_where(knob) -> str:
    """Where a point does not read `knob`, as a note says it: 'spec_draft is unset', 'the model has no routed
    experts'."""
    return " or ".join([*([off_where(knob.switches)] if knob.switches else []),
                        *([f"the model has no {knob.only_for.words}"] if knob.only_for is not None else [])])


def _off(knob, values: dict[str, list]) -> list[bool]:
    """For each combination of the values a sweep gives what decides whether a point reads a knob (_read_by; a switch
    not given at its default), whether a point there does not read it."""
    names = list(_read_by(knob))
    grid = itertools.product(*(values.get(n, [sweep_default(n)]) for n in names))
    return [_all_off(knob, dict(zip(names, combo, strict=True))) for combo in grid]


def _all_off(knob, values: dict) -> bool:
    """Whether a point at one combination of _read_by's values (a switch it does not name at its default) does not
    read the knob (Knob.read_where): its switches all off, or its model without what the knob reads."""
    return not knob.read_where(lambda s: values.get(s.name, sweep_default(s.name)), values.get("model"))


def idle_knobs_note(sweep) -> str:
    """The knobs a sweep sets that no point reads (_all_off at every point: their only_with knobs, explore/knobs.py,
    all off), so they change nothing (act_predictor deja_vu with act_kept 1 throughout, a link where tp and pp are 1),
    or ''. A note, not an error: a grid may cross them."""
    idle = _idle_knobs(sweep)
    if not idle:
        return ""
    said = ", ".join(f"{k.name} ({_unread_where(k)}, off, at every point)" for k in idle)
    return f"{said}: {'it changes' if len(idle) == 1 else 'they change'} nothing, so points that differ only there " \
           f"are one design, run once"


def _idle_knobs(sweep) -> list:
    """The knobs a sweep sets that no point reads (idle_knobs_note)."""
    values = sweep.dimensions() | sweep.derived_values()
    return [k for k in knobs() if _read_by(k) and any(v != sweep_default(k.name) for v in values.get(k.name, ()))
            and all(_off(k, values))]


def crossed_switch_note(sweep) -> str:
    """How many points of a grid crossing switches with the knobs they turn on (spec_draft '' and medusa with four
    acceptance rates; tp 1 and 2 with two links), or models with a knob that reads what only some have (a dense model
    and an MoE one with two moe_routing values), are another point's design again, the knobs changing nothing where
    their points do not read them, or '' (knobs no point reads are idle_knobs_note's). Derived knobs and searches
    are left out."""
    if sweep.spec.search.strategy != "grid":
        return ""
    dims, derived = sweep.dimensions(), sweep.derived_values()
    crossed = [k for k in knobs() if _read_by(k) and len(dims.get(k.name, ())) > 1 and k.name not in FORMAT_FIELDS
               and not {k.name, *_read_by(k)} & set(derived) and 0 < sum(_off(k, dims)) < len(_off(k, dims))]
    if not crossed:
        return ""
    # The dimensions the crossed knobs and what decides their reading take, each combination read as its design: a
    # knob its point does not read there is the same design at each of its values.
    idle_where_off = {k.name for k in crossed}
    names = list(dict.fromkeys(n for k in crossed for n in (*_read_by(k), k.name) if n in dims))
    repeated = _repeats(sweep, dims, names, lambda combo: tuple(
        None if n in idle_where_off and _all_off(KNOBS[n], combo) else combo[n] for n in names))
    if not repeated:
        return ""
    by_where: dict[str, list[str]] = {}
    for k in crossed:
        by_where.setdefault(_unread_where(k), []).append(k.name)
    said = [f"{' and '.join(idle)} {'changes' if len(idle) == 1 else 'change'} nothing where {where}"
            for where, idle in by_where.items()]
    return f"{repeated} of {sweep.size()} points are another point's design, run once: {'; '.join(said)}"


def idle_format_note(sweep) -> str:
    """The format settings a sweep gives that change nothing at some of its points' formats (NumericFormat.canonical,
    which Sweep.point applies: group_size beside 16-bit weights and KV cache, edge_layers without edge_layer_bits, a
    bit override equal to weight_bits), where (IDLE_WHERE), and how many points of a grid are therefore another
    point's design again; or ''. Such a point is the design at the setting's default, which its results show.
    Settings off at every point are idle_knobs_note's."""
    dims = sweep.dimensions()
    targets = [t for t in sweep.derived if t in FORMAT_FIELDS]
    read = {name for t in targets for name in sweep.derived_inputs(t)[0]}
    names = [n for n in dims if n in FORMAT_FIELDS or n in read]  # a point's format: its single values too
    if not targets and not any(n in IDLE_WHERE for n in names):
        return ""

    def settled(combo: dict) -> dict:
        return canonical_format(combo | sweep.derive(combo, targets) if targets else combo)

    combos = [dict(zip(names, combo, strict=True)) for combo in itertools.product(*(dims[n] for n in names))]
    given = [(combo | sweep.derive(combo, targets) if targets else combo, settled(combo)) for combo in combos]
    off_everywhere = {k.name for k in _idle_knobs(sweep)}
    idle = [n for n in dict.fromkeys([*names, *targets]) if n in IDLE_WHERE and n not in off_everywhere
            and any(values[n] != canonical[n] for values, canonical in given if n in values)]
    if not idle:
        return ""
    by_where: dict[str, list[str]] = {}
    for name in idle:
        by_where.setdefault(IDLE_WHERE[name], []).append(name)
    said = "; ".join(f"{' and '.join(idle)} {'changes' if len(idle) == 1 else 'change'} nothing {where}"
                     for where, idle in by_where.items())
    grid = sweep.spec.search.strategy == "grid"
    repeated = _repeats(sweep, dims, names, lambda combo: tuple(settled(combo).items())) if grid else 0
    if repeated:
        return f"{repeated} of {sweep.size()} points are another point's design, run once: {said}"
    return f"{said}: there a point is the design at its default, which its results show"


def idle_what_if_note(sweep) -> str:
    """How many points of a grid crossing what-ifs with the settings that leave them nothing to change are another
    point's design again: a pool's (explore/pool_what_ifs.py) where its switch is off (attention_device none,
    prefill_replicas 0), the link's where the point runs on one device (tp and pp 1), a router's where nothing is
    routed, an autoscaler's settings where no pool may scale, a target and metric where the SLA planner
    scales. '' where none are; derived knobs
    and searches are left out."""
    dims = sweep.dimensions()
    if sweep.spec.search.strategy != "grid":
        return ""
    swept = [key for key, values in dims.items() if len(values) > 1]
    groups = [([pool.switch], lambda combo, pool=pool: pool.switched_off(combo[pool.switch]), pool.off,
               [key for key in swept if key.startswith(pool.prefix)]) for pool in POOL_WHAT_IFS if pool.switch in dims]
    groups.append((["tp", "pp"], lambda combo: combo["tp"] * combo["pp"] == 1, "tp and pp are 1",
                   [key for key in swept if key.startswith(LINK_PREFIX)]))
    groups.append((_node_link_switches(dims), lambda combo: _node_link_unread(combo, sweep.spec.serving),
                   "the devices fit one node of the link and no prefill pool or KV store sends KV over it",
                   [key for key in swept if key == "node_link"]))
    for kind in (kind for kind in ("prefill", "mixed") if f"{kind}_node_link" in swept):
        groups.append(([name for name in _node_link_switches(dims) if name != f"{kind}_node_link"],
                       lambda combo, kind=kind: _node_link_unread(combo, sweep.spec.serving, kind),
                       f"the {kind} pool's devices fit one node of their link and no KV handover or store crosses it",
                       [f"{kind}_node_link"]))
    groups.append((["replicas", "prefill_replicas", "mixed_replicas", "max_replicas", "pp", "tp", "attention_parallel"],
                   lambda combo: not routes(combo),
                   "one replica in each pool and one pipeline stage", [key for key in swept if key == "router"]))
    groups.append((["replicas", "prefill_replicas", "max_replicas", "prefill_max_replicas", "mixed_replicas",
                    "mixed_max_replicas"],
                   lambda combo: not scales(combo), "max_replicas is replicas" + (
                       " and prefill_max_replicas prefill_replicas" if "prefill_max_replicas" in dims else "")
                   + " (no replica is ever added)",
                   [key for key in swept if key in AUTOSCALE_KNOBS[2:]]))
    groups.append((["autoscaler", "replicas", "max_replicas"], lambda combo: not reads_metric(combo),
                   "the autoscaler is a Dynamo planner (it scales on the SLO, not on a server metric) or scales from "
                   "zero to one replica (KEDA alone)",
                   [key for key in swept if key in ("autoscale_target", "autoscale_metric")]))
    for key in (key for key in swept if key in SCHEDULER_SETTINGS):  # a setting its scheduler does not read
        idle_under = [name for name in SCHEDULERS if unread([key], {"scheduler": (name,)})]
        groups.append((["scheduler"], lambda combo, idle_under=idle_under: combo["scheduler"] in idle_under,
                       f"the scheduler is {' or '.join(idle_under)}", [key]))
    # Settings the serving settings' rules leave unread beside others (ServingSpec, or the sweep's point, drops them
    # there): a think setting where no turn thinks, a retry setting where no rejected request is retried.
    thinking, gateway = ["conversation_turns", "think_s"], [*GATEWAY_KNOBS, "client_retries"]
    for key, switches, words in (
            ("think_s", thinking, "conversation_turns is 1 (independent requests)"),
            ("think_cv", thinking, "conversation_turns is 1 or think_s 0 (no turn thinks)"),
            ("client_retries", gateway, "the gateway rejects nothing (no busy threshold, or busy_action queue)"),
            ("client_retry_s", gateway, "no rejected request is retried")):
        if key in swept:
            groups.append((switches, lambda combo, key=key, switches=switches: bool(unread([key], {
                name: (combo[name],) for name in switches})), words, [key]))
    groups.append((["autoscaler"], lambda combo: not forecasts(combo["autoscaler"]),
                   "the autoscaler forecasts no load (only the SLA planner does)",
                   [key for key in swept if key == "autoscale_predictor"]))
    said, idle = [], []
    for switches, off, words, keys in groups:
        switched = [dict(zip(switches, combo, strict=True)) for combo in itertools.product(
            *(dims.get(name, [_UNSET.get(name, 1)]) for name in switches))]
        if keys and any(off(combo) for combo in switched):
            said.append(f"{', '.join(keys)} {'changes' if len(keys) == 1 else 'change'} nothing where {words}")
            idle.append((switches, off, keys))
    if not said:
        return ""
    names = list(dict.fromkeys(name for switches, _, keys in idle for name in (*switches, *keys)))
    dims = {name: dims.get(name, [_UNSET.get(name, 1)]) for name in names} | {k: v for k, v in dims.items()
                                                                               if k not in names}

    def design(combo: dict) -> tuple:
        unread = {key for switches, off, keys in idle if off(combo) for key in keys}
        return tuple(None if name in unread else combo[name] for name in names)

    repeated = _repeats(sweep, dims, names, design)
    return f"{repeated} of {sweep.size()} points are another point's design, run once: {'; '.join(said)}" \
        if repeated else ""


# A switch's value where a sweep leaves it unset, where that is not 1 (the device's own link, no prefill pool or KV
# store, a fleet without mixed replicas or device, a pool that does not scale, a gateway without thresholds that rejects
# and whose clients do not retry).
_UNSET = {"link": "", "prefill_replicas": 0, "kv_store_GB": None, "kv_store_GBps": None, "mixed_device": "",
          "prefill_node_link": "", "mixed_node_link": "", "attention_device": "", "attention_placement": None,
          "mixed_replicas": 0, "max_replicas": 0, "prefill_max_replicas": 0, "mixed_max_replicas": 0,
          **dict.fromkeys((*GATEWAY_KNOBS, "client_retries"))}


def _repeats(sweep, dims: dict, names: list[str], design) -> int:
    """Points of a grid that are another point's design, read off the combinations of the dimensions
    `names` alone (every other dimension multiplies each design alike): `design(combo)` is a combination's design."""
    combos = [dict(zip(names, combo, strict=True)) for combo in itertools.product(*(dims[n] for n in names))]
    return round(sweep.size() * (1 - len({design(combo) for combo in combos}) / len(combos)))
