"""DeepSeek's multi-token-prediction (MTP) module as a speculative draft runs it, built from the decoder's parts.

DeepSeek-V3 (arXiv 2412.19437, section 2.2) ships one MTP module beside the model (config.json
num_nextn_predict_layers: 1; layer 61 of the checkpoint, README_WEIGHTS.md: 11.5B parameters of its own, the
embedding and the output head shared with the model). vLLM drafts with it (speculative method 'deepseek_mtp';
vllm/model_executor/models/deepseek_mtp.py, DeepSeekMultiTokenPredictorLayer): the next token's embedding and the
model's hidden state at the position before, each RMS-normalized (enorm, hnorm), concatenated and projected from
2 x hidden to hidden (eh_proj, an nn.Linear every tensor-parallel rank holds whole), one decoder layer of the model's
shape (mtp_block: MLA and an MoE MLP) over a KV cache of its own, then the shared head's RMSNorm and the model's LM
head (compute_logits: shared_head.head, a ParallelLMHead). A draft step runs it over one token a sequence; a prefill
over the prompt's tokens, filling its KV cache. vLLM zeroes the embedding of position 0 (a masked write of one row,
data-dependent on fake tensors): not traced.

The module names its parts as the decoder does (layers.0, norm, lm_head), so that sharding, fusion and step templates
read them as a model's; eh_proj, enorm and hnorm run outside the layer stack, once a pass.
"""

from __future__ import annotations

import torch
from torch import nn

from workloads.capture import capture, check_sampled
from workloads.decoder import TORCH_DTYPES, DecoderLayer, KVCache, RMSNorm, RotaryEmbedding
from workloads.model_config import ModelConfig
from workloads.trace import Trace


class MTPModule(nn.Module):
    """An MTP module (ModelConfig.mtp_module): the model's embedding, enorm and hnorm, eh_proj, one decoder layer, the
    shared head's norm and the model's LM head; forward returns the logits of the last `sampled` positions."""

    def __init__(self, config: ModelConfig, max_tokens: int | None = None):
        """`max_tokens`: the most tokens a pass runs, as DecoderModel takes it (its MoE layer's experts)."""
        super().__init__()
        dtype = TORCH_DTYPES.get(config.dtype, torch.bfloat16)
        h = config.hidden_size
        self.config, self.dtype = config, dtype
        self.embed_tokens = nn.Embedding(config.vocab_size, h, dtype=dtype)  # the model's (shared)
        self.rotary = RotaryEmbedding(config.qk_rope_head_dim if config.is_mla else config.head_dim, config.rope_theta)
        self.enorm = RMSNorm(h, config.norm_eps, dtype)
        self.hnorm = RMSNorm(h, config.norm_eps, dtype)
        self.eh_proj = nn.Linear(2 * h, h, bias=False, dtype=dtype)
        self.layers = nn.ModuleList([DecoderLayer(config, dtype, 0, max_tokens)])
        self.norm = RMSNorm(h, config.norm_eps, dtype)  # vLLM's shared_head.norm
        self.lm_head = nn.Linear(h, config.vocab_size, bias=False, dtype=dtype)  # the model's (shared)

    def forward(self, input_ids: torch.Tensor, hidden: torch.Tensor, cache: KVCache, start: int = 0,
                sampled: int = 1) -> torch.Tensor:
        """Logits of the tokens after each sequence's last `sampled` positions: `input_ids` the tokens fed, `hidden` the
        model's hidden states of the positions before them ([batch, tokens, hidden])."""
        s = input_ids.shape[1]
        rope = self.rotary(torch.arange(start, start + s).unsqueeze(0), self.dtype)
        x = self.eh_proj(torch.cat([self.enorm(self.embed_tokens(input_ids)), self.hnorm(hidden)], dim=-1))
        x = self.layers[0](x, rope, cache.keys[0], cache.values[0], start)
        return self.lm_head(self.norm(x[:, -sampled:, :]))


def trace_mtp(config: ModelConfig, *, phase: str, batch: int, seq_len: int, context_len: int = 0,
              sampled: int = 1) -> Trace:
    """One prefill or decode step of an MTP module (`config` = ModelConfig.mtp_module()) on fake tensors, as
    capture.trace_model traces a model: prefill, batch sequences of seq_len tokens into its empty cache; decode,
    seq_len tokens a sequence after context_len cached ones (and the model's hidden states of as many); logits at the
    last `sampled` positions of each."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    if not config.mtp:
        raise ValueError(f"config: found {config.name} (a model), allowed: an MTP module's (ModelConfig.mtp_module)")
    if phase not in ("prefill", "decode"):
        raise ValueError(f"phase: found {phase!r}, allowed: 'prefill', 'decode'")
    check_sampled(sampled, seq_len)
    start = 0 if phase == "prefill" else context_len
    with FakeTensorMode():
        module = MTPModule(config, max_tokens=batch * seq_len)
        cache = KVCache(config, batch, start + seq_len, module.dtype)
        inputs = (torch.zeros((batch, seq_len), dtype=torch.long),
                  torch.zeros((batch, seq_len, config.hidden_size), dtype=module.dtype), cache, start, sampled)
        return capture(module, inputs, model=config.name, phase=phase, batch=batch, seq_len=seq_len,
                       context_len=start, kv_tensors=cache.tensors(), sliding_window=config.sliding_window)
