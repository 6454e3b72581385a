"""Which serving settings a run reads only beside others: one table of rules that `explore run --serving` (its flags)
and a sweep's serving: section (its keys) both refuse by, so that a setting nothing reads is one line rather than a
column in the results as if it had been run."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Container, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from sim.autoscalers import forecasts, on_metric
from sim.schedulers import SCHEDULERS
from sim.serving_spec import BUSY_THRESHOLDS, SCALED_POOLS, ServingSpec, trace_requests
from workloads.errors import InputError, found_value

# Every value the user gave each setting (a ServingSpec field, and the point's pipeline stages `pp`): one for a run,
# each value of a list in a sweep.
Values = Mapping[str, tuple[Any, ...]]

# ServingSpec fields whose flag is not the field's name (`--rate` sets rate_per_s).
FLAGS = {"rate_per_s": "--rate", "slo_ttft_s": "--slo-ttft", "slo_tpot_s": "--slo-tpot",
         "slo_attainment": "--slo-attainment", "slo_slowdown": "--slo-slowdown",
         "slo_urgent_ttft_s": "--slo-urgent-ttft", "slo_urgent_tpot_s": "--slo-urgent-tpot"}
# ServingSpec fields whose key in a sweep's serving: section is not the field's name (slo's are nested).
KEYS = {"rate_per_s": ("rate",), "slo_ttft_s": ("slo", "ttft_s"), "slo_tpot_s": ("slo", "tpot_s"),
        "slo_attainment": ("slo", "attainment"), "slo_slowdown": ("slo", "slowdown"),
        "slo_urgent_ttft_s": ("slo", "urgent_ttft_s"), "slo_urgent_tpot_s": ("slo", "urgent_tpot_s")}


def flag_of(field: str) -> str:
    """The `explore run` flag that sets a ServingSpec field ('--swap-GBps', '--rate')."""
    return FLAGS.get(field, f"--{field.replace('_', '-')}")


def key_of(field: str) -> tuple[str, ...]:
    """The keys under a sweep's serving: that set a ServingSpec field (('slo', 'attainment'))."""
    return KEYS.get(field, (field,))


def sweep_key_of(field: str) -> str:
    """How a sweep names a ServingSpec field: 'serving.slo.urgent_ttft_s', 'serving.rate'."""
    return ".".join(("serving", *key_of(field)))


SPEC_FIELDS = frozenset(f.name for f in dataclasses.fields(ServingSpec))


def renamed(message: str, name: Callable[[str], str], settings: Container[str] = SPEC_FIELDS) -> str | None:
    """A `message` leading with a setting's key ('max_replicas: found 2 with prefill_replicas 3, ...') with the settings
    it names as the caller names them (`name`: a flag, a sweep's key); `settings`: the keys renamed (ServingSpec's
    fields, or every setting `explore run` has a flag for); None where it leads with none of them."""
    field, _, rest = message.partition(": ")
    if field not in settings:
        return None
    # The other settings it names ('found 1 with mixed_replicas 2') too.
    rest = re.sub(r"\bwith (\w+) ", lambda m: f"with {name(m[1])} " if m[1] in settings else m[0], rest)
    return f"{name(field)}: {rest}"


class Names(Protocol):
    """How a caller names serving settings in its messages."""

    def name(self, field: str) -> str:
        """The setting itself: '--prefill-device' or 'prefill_device'."""

    def setting(self, field: str, value: str) -> str:
        """The setting with a value the user would write: '--arrival gamma' or 'arrival: gamma'."""

    def found(self, field: str, value: Any) -> str:
        """The setting with a value the user gave: '--arrival poisson' or "arrival 'poisson'"."""

    def at_least(self, field: str, least: int, why: str) -> str:
        """A count of at least `least` and what it gives: '--prefill-replicas N (N >= 1: why)'."""


@dataclass(frozen=True)
class FlagNames:
    """Settings as `explore run` flags."""

    def name(self, field: str) -> str:
        return flag_of(field)

    def setting(self, field: str, value: str) -> str:
        return f"{flag_of(field)} {value}"

    def found(self, field: str, value: Any) -> str:
        return f"{flag_of(field)} {value}"

    def at_least(self, field: str, least: int, why: str) -> str:
        return f"{flag_of(field)} N (N >= {least}: {why})"


@dataclass(frozen=True)
class KeyNames:
    """Settings as keys of a sweep's serving: section."""

    def name(self, field: str) -> str:
        return ".".join(key_of(field))

    def setting(self, field: str, value: str) -> str:
        return f"{self.name(field)}: {value}"

    def found(self, field: str, value: Any) -> str:
        return f"{self.name(field)} {found_value(value)}"

    def at_least(self, field: str, least: int, why: str) -> str:
        return f"{self.name(field)} >= {least} ({why})"


@dataclass(frozen=True)
class ReadWhen:
    """A serving setting a run reads only beside others: `field` is read where `read` holds of the values given
    (in a sweep, where it holds for some point); `idle` says what leaves it unread and `allowed` what reads it."""

    field: str
    read: Callable[[Values], bool]
    idle: Callable[[Values, Names], str]
    allowed: Callable[[Names], str]
    sweep: bool = True  # False: a sweep's schema refuses the pair itself (Serving._consistent)


@dataclass(frozen=True)
class Idle:
    """A setting the user gave that nothing reads beside the others given."""

    field: str
    idle: str  # what leaves it unread: 'no prefill pool'
    allowed: str

    def message(self, shown: str) -> str:
        """The message after its setting's name, with the value found as the caller shows it."""
        return f"found {shown} with {self.idle}, allowed: {self.allowed}"


def _any(values: Values, field: str) -> bool:
    return any(values.get(field, ()))


def _set(values: Values, field: str) -> bool:
    """Whether `field` is given some value, 0 included (a threshold of 0 is a threshold; _any reads 0 as none)."""
    return any(value is not None for value in values.get(field, ()))


def _thresholds(values: Values) -> bool:
    """Whether some busy threshold is given: the gateway may find every replica busy."""
    return any(_set(values, f) for f in BUSY_THRESHOLDS)


def _rejects(values: Values) -> bool:
    """Whether the gateway may reject a request: a busy threshold, and some point rejecting where every one is busy."""
    return _thresholds(values) and any(action in (None, "reject") for action in values.get("busy_action", (None,)))


def _unrejected(values: Values, names: Names) -> str:
    """What leaves a rejected request's retries unread: no busy threshold, or a gateway queueing every request."""
    return names.found("busy_action", "queue") if _thresholds(values) else "no busy threshold"


def _converses(values: Values) -> bool:
    return any((turns or 1) > 1 for turns in values.get("conversation_turns", ()))


def _trace_has(values: Values, *columns: str) -> bool:
    """Whether some trace given has one of `columns` (RequestSet fields: shared_tokens, prefix_group, priority, or
    prefix_nodes from hash_ids, a prefix tree); an unreadable one counts as having it, so that the trace's own check
    refuses it with its own message."""
    for name in values.get("trace", ()):
        try:
            if name and any(getattr(trace_requests(name), column) is not None for column in columns):
                return True
        except InputError:
            return True
    return False


def _shares_prefixes(values: Values) -> bool:
    """Whether some value given has requests share prefixes: a prefix, conversations, or a trace naming them."""
    return _any(values, "prefix_tokens") or _converses(values) or _trace_has(values, "shared_tokens", "prefix_nodes")


def _prioritized(values: Values) -> bool:
    """Whether some value given has requests differ in priority: a share drawn urgent, or a trace's priority column."""
    return _set(values, "priority_fraction") or _trace_has(values, "priority")


def _attends_apart(values: Values) -> bool:
    return any(device not in (None, "", "none") for device in values.get("attention_device", ()))


def _pool(names: Names) -> str:
    return f"with {names.at_least('prefill_replicas', 1, 'a prefill pool to hand over from')}, or left out"


def _attention(names: Names) -> str:
    return f"with {names.setting('attention_device', 'DEVICE')} (attention on devices of its own), or left out"


def _chunks(values: Values, chunked: bool) -> bool:
    """Whether some scheduler given prefills in chunks (`chunked`) or whole (not `chunked`): a chunked one's token
    budget is chunk_tokens, one that prefills whole takes max_batched_tokens (Scheduler.token_budget)."""
    return any(SCHEDULERS[name].chunked is chunked for name in values.get("scheduler", ()) if name in SCHEDULERS)


def _preempting() -> str:
    """The schedulers that grow the KV cache block by block and so preempt, in words ('continuous or chunked')."""
    names = [name for name, scheduler in SCHEDULERS.items() if not scheduler.reserves_whole_request]
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"


def _preempts(values: Values) -> bool:
    """Whether some scheduler given preempts: grows the KV cache block by block (not reserves_whole_request)."""
    return any(not SCHEDULERS[name].reserves_whole_request
               for name in values.get("scheduler", ()) if name in SCHEDULERS)


def _budget(field: str, chunked: bool) -> ReadWhen:
    """A token budget that only schedulers which prefill in chunks (`chunked`), or only those which do not, read."""
    kinds = [name for name, scheduler in SCHEDULERS.items() if scheduler.chunked is chunked]
    kinds_text = kinds[0] if len(kinds) == 1 else f"{', '.join(kinds[:-1])} or {kinds[-1]}"
    return ReadWhen(field, lambda v: _chunks(v, chunked), lambda v, n: n.found("scheduler", v["scheduler"][0]),
                    lambda n: f"with {n.setting('scheduler', kinds_text)} (the token budget "
                              f"{'of a chunked prefill' if chunked else 'of a scheduler that prefills whole'}), "
                              f"or left out")


# What a router picks among: a pool's replicas, a replica's engines (a pipeline stage each, vLLM's virtual engines;
# or a data-parallel rank each, `ranks`: data_parallel_ranks).
ROUTED = ("replicas", "prefill_replicas", "pp", "ranks")


def data_parallel_ranks(tp: int, attention_parallel: str) -> int:
    """The engines of a replica whose attention runs data-parallel (sim/data_parallel.py): one per tp device, each
    with its own requests, which the pool's router picks among; 1 where the attention is tensor-parallel."""
    return tp if attention_parallel == "data" else 1


def _routes(values: Values) -> bool:
    """Whether some value given has more than one replica in a pool (or that an autoscaled pool may hold) or a fleet, or
    more than one engine in a replica."""
    return any(count > 1 for field in ROUTED for count in values.get(field, ())) or any(
        (count or 0) >= 1 for count in values.get("mixed_replicas", ())) or any(
        (count or 0) > 1 for name in ("max_replicas", "prefill_max_replicas") for count in values.get(name, ()))


def _traced(field: str) -> ReadWhen:
    """A run's prompt or output length, which a trace's lengths replace."""
    return ReadWhen(field, lambda v: not _any(v, "trace"), lambda v, n: n.found("trace", v["trace"][0]),
                    lambda n: f"left out with {n.name('trace')} (the trace gives each request's {field} tokens)",
                    sweep=False)


RULES: tuple[ReadWhen, ...] = (
    ReadWhen("cv", lambda v: "gamma" in v["arrival"], lambda v, n: n.found("arrival", v["arrival"][0]),
             lambda n: f"with {n.setting('arrival', 'gamma')} (Poisson arrivals have a cv of 1), or left out"),
    ReadWhen("swap_GBps", lambda v: "swap" in v["preemption"] or _any(v, "host_cache_GB"),
             lambda v, n: n.found("preemption", v["preemption"][0]),
             lambda n: f"with {n.setting('preemption', 'swap')} or {n.name('host_cache_GB')} > 0 (recompute "
                       f"preemption moves nothing over the host link), or left out"),
    ReadWhen("prefill_device", lambda v: _any(v, "prefill_replicas"), lambda v, n: "no prefill pool", _pool),
    ReadWhen("mixed_device", lambda v: _any(v, "mixed_replicas"), lambda v, n: "no mixed replicas",
             lambda n: f"with {n.at_least('mixed_replicas', 1, 'replicas of it beside the point')}, or left out"),
    ReadWhen("kv_link", lambda v: _any(v, "prefill_replicas"), lambda v, n: "no prefill pool", _pool),
    ReadWhen("decode_pick", lambda v: _any(v, "prefill_replicas"), lambda v, n: "no prefill pool", _pool),
    *(ReadWhen(field, lambda v: _any(v, "lora_adapters"), lambda v, n: "no LoRA adapters",
               lambda n: f"with {n.at_least('lora_adapters', 1, 'adapters over the base model')}, or left out")
      for field in ("lora_rank", "max_loras", "lora_alpha")),
    ReadWhen("prefill_node_link", lambda v: _any(v, "prefill_replicas"), lambda v, n: "no prefill pool", _pool),
    ReadWhen("mixed_node_link", lambda v: _any(v, "mixed_replicas"), lambda v, n: "no mixed replicas",
             lambda n: f"with {n.at_least('mixed_replicas', 1, 'replicas of mixed_device beside the point')}, or "
                       f"left out"),
    # A most replicas (SCALED_POOLS) given at all, 0 included (which its own check refuses): a pool scales.
    *(ReadWhen(field, lambda v: any(m is not None for most, _ in SCALED_POOLS for m in v.get(most, ())),
               lambda v, n: "no autoscaling",
               lambda n: f"with {n.name('max_replicas')}, {n.name('prefill_max_replicas')} or "
                         f"{n.name('mixed_max_replicas')} (the most replicas a pool scales to), or left out")
      for field in ("autoscale_target", "autoscale_metric", "cold_start_s", "autoscaler", "autoscale_interval_s",
                    "autoscale_predictor")),
    ReadWhen("autoscale_predictor", lambda v: any(forecasts(kind) for kind in v.get("autoscaler", (None,))),
             lambda v, n: next((n.found("autoscaler", kind) for kind in v.get("autoscaler", ()) if kind),
                               "the default autoscaler, hpa"),
             lambda n: f"with {n.setting('autoscaler', 'sla_planner')} or sla_load_planner (the SLA planner forecasts "
                       f"the load), or left out"),
    # The SLA planner scales on the SLO, not on a server metric's target.
    *(ReadWhen(field, lambda v: any(on_metric(kind) for kind in v.get("autoscaler", (None,))),
               lambda v, n: n.found("autoscaler", v["autoscaler"][0]),
               lambda n: f"with {n.setting('autoscaler', 'hpa')} (Dynamo's planners scale on the SLO's limits), or "
                         f"left out")
      for field in ("autoscale_target", "autoscale_metric")),
    ReadWhen("prefill_max_replicas", lambda v: _any(v, "prefill_replicas"), lambda v, n: "no prefill pool", _pool),
    ReadWhen("busy_action", _thresholds, lambda v, n: "no busy threshold",
             lambda n: f"with {n.name('busy_kv_usage')}, {n.name('busy_prefill_tokens')} or "
                       f"{n.name('busy_waiting_requests')} (when a replica is busy), or left out"),
    ReadWhen("client_retries", _rejects, _unrejected,
             lambda n: f"with a busy threshold ({n.name('busy_kv_usage')}, {n.name('busy_prefill_tokens')} or "
                       f"{n.name('busy_waiting_requests')}) and the gateway rejecting (a queueing gateway rejects "
                       f"none), or left out"),
    ReadWhen("client_retry_s", lambda v: _rejects(v) and _any(v, "client_retries"),
             lambda v, n: _unrejected(v, n) if not _rejects(v) else "no client retries",
             lambda n: f"with {n.at_least('client_retries', 1, 'retries of a rejected request')}, or left out"),
    ReadWhen("mixed_max_replicas", lambda v: _any(v, "mixed_replicas"), lambda v, n: "no mixed replicas",
             lambda n: f"with {n.at_least('mixed_replicas', 1, 'replicas of mixed_device beside the point')}, or "
                       f"left out"),
    ReadWhen("slo_attainment", lambda v: any(_any(v, f) for f in ("slo_ttft_s", "slo_tpot_s", "slo_slowdown",
                                                                  "slo_urgent_ttft_s", "slo_urgent_tpot_s")),
             lambda v, n: "no SLO",
             lambda n: f"with an SLO to attain ({n.name('slo_ttft_s')}, {n.name('slo_tpot_s')} or "
                       f"{n.name('slo_slowdown')}), or left out"),
    # prefix_groups beside a trace that gives its requests' groups is refused by the spec, naming the trace's groups
    # (ServingSpec): a prefix length would not make it read.
    *(ReadWhen(field, read, lambda v, n: "no shared prefix",
               lambda n: f"with {n.at_least('prefix_tokens', 1, 'a prefix the requests share')}, or left out")
      for field, read in (("prefix_attention", lambda v: _any(v, "prefix_tokens")),
                          ("prefix_groups",
                           lambda v: _any(v, "prefix_tokens") or _trace_has(v, "prefix_group", "prefix_nodes")))),
    # What is read only where requests share prefixes: the admission order by them, and the tiers that keep them.
    *(ReadWhen(field, read, lambda v, n: "no shared prefix",
               lambda n: f"with {n.at_least('prefix_tokens', 1, 'a prefix the requests share')}, "
                         f"{n.at_least('conversation_turns', 2, 'conversations')} or a {n.name('trace')} that names "
                         f"its requests' shared prefixes (shared_tokens or hash_ids), or left out")
      for field, read in (("queue_policy", lambda v: "lpm" not in v["queue_policy"] or _shares_prefixes(v)),
                          ("host_cache_GB", _shares_prefixes), ("kv_store_GB", _shares_prefixes))),
    *(ReadWhen(field, read, lambda v, n: "every request of one priority",
               lambda n: f"with {n.name('priority_fraction')} (a share of requests urgent) or a {n.name('trace')} with "
                         f"a priority column, or left out")
      for field, read in (("queue_policy", lambda v: "priority" not in v["queue_policy"] or _prioritized(v)),
                          ("slo_urgent_ttft_s", _prioritized), ("slo_urgent_tpot_s", _prioritized))),
    ReadWhen("kv_store_GBps", lambda v: _any(v, "kv_store_GB"), lambda v, n: "no KV store",
             lambda n: f"with {n.name('kv_store_GB')} > 0, or left out"),
    ReadWhen("think_s", _converses, lambda v, n: "no conversations",
             lambda n: f"with {n.at_least('conversation_turns', 2, 'conversations')}, or left out"),
    ReadWhen("think_cv", lambda v: _converses(v) and _any(v, "think_s"), lambda v, n: "no think time",
             lambda n: f"with {n.at_least('conversation_turns', 2, 'conversations')} and {n.name('think_s')} > 0, "
                       f"or left out"),
    *(ReadWhen(field, _attends_apart, lambda v, n: f"no {n.name('attention_device')}", _attention)
      for field in ("attention_devices", "attention_link", "attention_micro_batches", "attention_placement")),
    ReadWhen("router", _routes, lambda v, n: "one replica in each pool and one pipeline stage",
             lambda n: f"with {n.at_least('replicas', 2, 'replicas to pick from')}, "
                       f"{n.at_least('prefill_replicas', 2, 'prefill replicas to pick from')}, "
                       f"{n.at_least('mixed_replicas', 1, 'a fleet to pick from')}, "
                       f"{n.at_least('max_replicas', 2, 'replicas an autoscaled pool may hold')}, pipeline stages "
                       f"(pp >= 2: engines to pick from) or data-parallel ranks "
                       f"({n.setting('attention_parallel', 'data')}: ranks to pick from), or left out"),
    ReadWhen("preemption", lambda v: "swap" not in v["preemption"] or _preempts(v),
             lambda v, n: n.found("scheduler", v["scheduler"][0]),
             lambda n: f"with a scheduler that preempts ({n.setting('scheduler', _preempting())}; static and orca "
                       f"reserve each request's KV whole and never preempt), or recompute"),
    ReadWhen("max_decode_preemptions", lambda v: "orca" in v.get("scheduler", ()),
             lambda v, n: n.found("scheduler", v["scheduler"][0]),
             lambda n: f"with {n.setting('scheduler', 'orca')} (decodes preempted by arriving prompts, as "
                       f"splitwise-sim's baseline), or left out"),
    # vLLM v1 caps a request's tokens a step at long_prefill_token_threshold (the chunked scheduler); the schedulers
    # that prefill whole never split a prompt over iterations: vLLM v0 without chunked prefill (the continuous
    # scheduler's source) chunks a prompt only where enable_chunking (vllm/core/scheduler.py
    # _get_num_new_uncached_and_cached_tokens).
    ReadWhen("long_prefill_tokens", lambda v: _chunks(v, chunked=True),
             lambda v, n: n.found("scheduler", v["scheduler"][0]),
             lambda n: f"with {n.setting('scheduler', 'chunked')} (vLLM v1's cap on a request's tokens an iteration), "
                       f"or left out"),
    _budget("chunk_tokens", chunked=True),
    _budget("max_batched_tokens", chunked=False),
    _budget("prompt_batch_tokens", chunked=False),
    _traced("prompt"),
    _traced("output"),
)


# The token budgets a scheduler reads by how it prefills (Scheduler.token_budget): a chunked one chunk_tokens, one that
# prefills whole max_batched_tokens and prompt_batch_tokens.
TOKEN_BUDGETS = ("chunk_tokens", "max_batched_tokens", "prompt_batch_tokens")
# What only some schedulers read: the token budgets, orca's cap on the iterations a decode sits out, and the chunked
# scheduler's cap on a request's tokens an iteration.
SCHEDULER_SETTINGS = (*TOKEN_BUDGETS, "max_decode_preemptions", "long_prefill_tokens")
# What the gateway does where every replica is busy, and how a rejected request's client retries it (read only where
# the gateway rejects).
GATEWAY_KNOBS = (*BUSY_THRESHOLDS, "busy_action")
CLIENT_RETRIES = ("client_retries", "client_retry_s")


# The schedulers that model vLLM, each by the setting that is its max_num_batched_tokens: the chunked one's chunk
# budget, and the continuous one's max_batched_tokens (vLLM v0 without chunked prefill). Static batching and Orca
# model no vLLM, so vLLM's limits are not theirs.
VLLM_BUDGETS = {"chunked": "chunk_tokens", "continuous": "max_batched_tokens"}


def refused_limits(spec: ServingSpec) -> str:
    """Why vLLM refuses the spec's scheduler limits, as one line naming the key ('' where it takes them): the token
    budget of a scheduler that models vLLM (VLLM_BUDGETS: vLLM's max_num_batched_tokens) below max_seqs
    (max_num_seqs). The limits are each engine's (a data-parallel rank's own, as each of vLLM's data-parallel engines
    checks its own), and vLLM compares the two alone, whatever tokens a speculative decode verifies."""
    # vLLM checks it whatever chunked prefill is set to: vllm/config/scheduler.py SchedulerConfig.verify_max_model_len
    # (vllm-project/vllm commit 01230b40), and v0's vllm/config.py SchedulerConfig._verify_args (commit c0c2335c):
    # "max_num_batched_tokens (...) must be greater than or equal to max_num_seqs (...)".
    budget = VLLM_BUDGETS.get(spec.scheduler)
    if budget is None or (tokens := getattr(spec, budget)) >= spec.max_seqs:
        return ""
    return (f"{budget}: found {tokens} with max_seqs {spec.max_seqs}, allowed: an integer >= {spec.max_seqs}, or "
            f"{tokens} with max_seqs <= {tokens} (vLLM refuses max_num_batched_tokens, the {spec.scheduler} "
            f"scheduler's token budget, below max_num_seqs)")


def unread(fields: Iterable[str], values: Values) -> set[str]:
    """Those of `fields` that a run beside `values` does not read, by RULES (chunk_tokens beside scheduler
    ('continuous',)): a sweep's point is the point without them."""
    return {rule.field for rule in RULES if rule.field in fields and not rule.read(values)}


def idle_setting(given: set[str] | frozenset[str], values: Values, names: Names, *,
                 sweep: bool = False) -> Idle | None:
    """The first setting the user gave (`given`, ServingSpec fields) that no run reads beside `values`, every value
    given of each setting; None when each is read. `sweep`: only the rules a sweep's section is checked by."""
    for rule in RULES:
        if rule.field in given and (rule.sweep or not sweep) and not rule.read(values):
            return Idle(rule.field, rule.idle(values, names), rule.allowed(names))
    return None
