"""Step templates of models whose decoder layers do not all launch the same kernels, as weighted mixes of templates
whose layers do.

A step template is read from traces of a model's first TEMPLATE_LAYERS layers and counts each layer's rows
num_layers times (kernels/shapes.py), so it cannot tell one layer from another. Three kinds of model are priced
from two templates each, one mechanism (mixed_template): the template of one variant of the model, and the rows
that differ taken from the other's:

- a format whose first and last decoder layers keep more bits (NumericFormat.edge_layer_bits): one template with
  every layer in the format of the layers between the edges (NumericFormat.interior), one with every layer in the
  edge layers' format (NumericFormat.at_edge); the rows a format sets (weight GEMMs and the kernels a format adds,
  KernelTable.format_rows) of the decoder layers are counted for the share of layers between the edges from the
  first, for the edge share (NumericFormat.edge_share) from the second;
- an MoE model with dense first layers (DeepSeek's first_k_dense_replace): one template with an MoE MLP in every
  layer, one with a dense MLP in every layer; the MLP rows are counted for the MoE layers' share from the first,
  for the dense layers' share from the second, each marked with the kind of layer it runs in (StepTemplate.layer_kind:
  where a pass places them, as data-parallel ranks' dual-batch overlap runs the dense layers before any all-to-all);
- multi-head latent attention (DeepSeek's MLA): one template with every pass in the absorbed form, one in the
  decompressed form (ModelConfig.mla_form); every row of the first is kept, and the second's own rows (kernels/
  shapes.py FORM_MODULES) appended, counted whole: an iteration prices its prefill tokens in the decompressed form,
  its decode tokens in the absorbed one, as vLLM runs them. The prefill attention is the decompressed form's.

Every count is linear in the layers, so a mix prices the layers exactly as a whole-model trace does.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import replace

import numpy as np

from kernels.formats import NumericFormat
from kernels.shapes import LAYERS_DENSE, LAYERS_MOE, SPAN_MODEL, StepTemplate, form_rows
from kernels.table import KernelTable
from workloads.model_config import MLA_ABSORBED, MLA_DECOMPRESSED, ModelConfig

_MLP = re.compile(r"(?<![^.])mlp(\.|$)")


def edge_mixed_template(build: Callable[[NumericFormat], StepTemplate], fmt: NumericFormat,
                        num_layers: int) -> StepTemplate:
    """The template of `fmt` for a model of `num_layers` decoder layers, from `build` (a format's template)."""
    if not fmt.edge_layer_bits:
        return build(fmt)
    share = fmt.edge_share(num_layers)
    interior, edge = build(fmt.interior()), build(fmt.at_edge())
    if share >= 1.0:
        return replace(edge, linear=replace(edge.linear, numeric_format=fmt))
    mixed = mixed_template(interior, edge, _layer_format_rows, share)
    return replace(mixed, linear=replace(mixed.linear, numeric_format=fmt))


def model_template(build: Callable[[ModelConfig], StepTemplate], config: ModelConfig) -> StepTemplate:
    """The template of `config` from `build` (the template of a config whose every layer launches the same kernels):
    its dense first layers mixed with its MoE ones, its MLA forms mixed, or itself."""
    if config.dense_layers:
        moe, dense = (model_template(build, part) for part in _layer_kinds(config))
        mixed = mixed_template(moe, dense, _mlp_rows, config.dense_layers / config.num_layers)
        # Each row's layers: the MoE template's MLP rows run in the MoE layers alone, the dense one's in the dense.
        kinds = np.concatenate([np.where(_mlp_rows(moe), LAYERS_MOE, moe.layer_kind),
                                np.full(np.count_nonzero(_mlp_rows(dense)), LAYERS_DENSE)]).astype(np.int8)
        # Each template's bytes are its whole model's, all in its form: linear in the layers, they mix layer by layer
        # (a form's own bytes per parameter kept: DeepSeek-V3's router bias is float32 in MoE layers alone).
        return replace(mixed, layer_kind=kinds, param_bytes=(moe.param_bytes * config.moe_layers + dense.param_bytes *
                                                             config.dense_layers) / config.num_layers)
    if _mixes_forms(config):
        absorbed, decompressed = (build(form) for form in _mla_forms(config))
        mixed = mixed_template(absorbed, decompressed, _decompressed_rows, 1.0)
        return replace(mixed, prefill_attention=decompressed.prefill_attention,
                       traced_prefill_pairs=decompressed.traced_prefill_pairs,
                       traced_prefill_tokens=decompressed.traced_prefill_tokens)
    return build(config)


def template_variants(config: ModelConfig) -> list[ModelConfig]:
    """The configs model_template builds a template of for `config`, each traced apart: an MoE model's with dense first
    layers as all-MoE and all-dense ones, an MLA model's with no form fixed in each form (DeepSeek's: four); itself
    otherwise."""
    if config.dense_layers:
        return [variant for part in _layer_kinds(config) for variant in template_variants(part)]
    return list(_mla_forms(config)) if _mixes_forms(config) else [config]


def _layer_kinds(config: ModelConfig) -> tuple[ModelConfig, ModelConfig]:
    """An MoE model with dense first layers as a model of its MoE layers only, and of its dense layers only."""
    return (replace(config, dense_layers=0),
            replace(config, dense_layers=0, num_experts=0, experts_per_token=0, shared_experts=0,
                    intermediate_size=config.dense_intermediate_size))


def _mixes_forms(config: ModelConfig) -> bool:
    """Whether a config's MLA has no form fixed: its template mixes both."""
    return config.is_mla and not config.mla_form


def _mla_forms(config: ModelConfig) -> tuple[ModelConfig, ModelConfig]:
    """An MLA model in its absorbed and in its decompressed form."""
    return replace(config, mla_form=MLA_ABSORBED), replace(config, mla_form=MLA_DECOMPRESSED)


def mixed_template(base: StepTemplate, other: StepTemplate, rows: Callable[[StepTemplate], np.ndarray],
                   share: float) -> StepTemplate:
    """`base` with its `rows` counted for 1 - share of the layers, and `other`'s `rows` appended, counted for `share`
    of them."""
    inner = rows(base)
    outer = np.flatnonzero(rows(other))
    linear = KernelTable.concat([base.linear, other.linear.select(outer)])
    return replace(
        base, linear=replace(linear, numeric_format=base.linear.numeric_format),
        coef={name: np.concatenate([c, other.coef[name][outer]]) for name, c in base.coef.items()},
        expert=np.concatenate([base.expert, other.expert[outer]]),
        general_layout=np.concatenate([base.general_layout, other.general_layout[:, outer]], axis=1),
        count=np.concatenate([np.where(inner, base.count * (1.0 - share), base.count), other.count[outer] * share]),
        span=np.concatenate([base.span, other.span[outer]]),
        layer_kind=np.concatenate([base.layer_kind, other.layer_kind[outer]]))


def _layer_format_rows(template: StepTemplate) -> np.ndarray:
    """Rows of a template's decoder layers whose work the format sets."""
    return template.linear.format_rows & (template.span != SPAN_MODEL)


def _mlp_rows(template: StepTemplate) -> np.ndarray:
    """Rows of a template's decoder layers' MLPs (an MoE layer's router, experts and shared experts; its
    collectives, placed after its last kernel, take its module)."""
    return np.array([bool(_MLP.search(k.module)) for k in template.linear.kernels]) & (template.span != SPAN_MODEL)


def _decompressed_rows(template: StepTemplate) -> np.ndarray:
    """Rows of MLA's decompressed form (none in an absorbed-form template)."""
    return form_rows(template.linear) == MLA_DECOMPRESSED
