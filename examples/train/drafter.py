"""A trainable DFlash drafter that computes what ``pipeline/dflash/draft_model.py`` computes,
for many blocks at once, and its self-distillation loss.

Per sequence, the target's hidden states at ``target_layer_ids`` for every position give
the context: ``rms_norm(fc(concat))``, then each draft layer's own k/v projections, k-norm,
RoPE at the token's position and value scale. ``M`` blocks are drafted in one pass, each
``[anchor, MASK x (B-1)]`` at positions ``a .. a+B-1``. A block's queries see

* the context positions ``max(0, a - window) .. a - 1`` (the anchor itself is not context:
  at inference it is the token the target has not seen yet), and
* all B keys of their own block (non-causal), none of the other blocks,

plus one sink logit per head, exactly the key set ``DraftModel.propose`` builds; blocks
are independent, so M of them in one masked attention train as M separate proposals.
In eval mode context and block K/V are rounded to bf16, as ``DraftModel`` reads them.

Loss (DFlash): cross-entropy of slots 1..B-1 against the tokens that followed the anchor in
the target's own generation, slot k weighted ``exp(-(k-1)/gamma)``: early slots matter more,
since a block is accepted only up to its first miss. ``committed`` in the stats is the mean
of 1 + the number of leading slots whose argmax is right: on greedy generations, exactly the
tokens greedy DFlash would commit for that block.

That per-anchor mean over-weights easy stretches: the decoder jumps over a block that
commits 8 tokens in one step but spends 8 steps on 8 blocks that commit 1 each.
``leading_commits`` + ``decoder_walk`` give the decoder's own number on a greedy sequence:
the commit at every anchor, then the walk from the first generated token, each step's
next anchor being the token after what it committed.

The target's embedding (anchor rows) and lm_head are passed in and stay frozen; the
drafter's parameters are named as its checkpoint's tensors.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from tilewarp.pipeline.dflash.config import DraftConfig
from tilewarp.pipeline.reference import rms_norm, swiglu

from .attention import attend, rope, rope_tables
from .model import DenseMLP, RMSNorm, round_bf16


class DraftAttention(nn.Module):
    def __init__(self, dcfg: DraftConfig):
        super().__init__()
        h, hd = dcfg.hidden_size, dcfg.head_dim
        self.cfg = dcfg
        self.q_proj = nn.Linear(h, dcfg.num_heads * hd, bias=False)
        self.k_proj = nn.Linear(h, dcfg.num_kv_heads * hd, bias=False)
        self.v_proj = nn.Linear(h, dcfg.num_kv_heads * hd, bias=False)
        self.o_proj = nn.Linear(dcfg.num_heads * hd, h, bias=False)
        self.q_norm = RMSNorm(hd, dcfg.rms_eps)
        self.k_norm = RMSNorm(hd, dcfg.rms_eps)
        if dcfg.sink:
            self.attention_sink_bias = nn.Parameter(torch.zeros(dcfg.num_heads))

    def kv(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """K (k-norm, RoPE) and V (value-scaled) ``[B, T, kv_heads, head_dim]`` of inputs ``[B, T, H]``."""
        c = self.cfg
        b, t, _ = x.shape
        k = rope(self.k_norm(self.k_proj(x).view(b, t, c.num_kv_heads, c.head_dim)), cos, sin)
        v = self.v_proj(x).view(b, t, c.num_kv_heads, c.head_dim) * c.value_scale
        if not self.training:
            k, v = round_bf16(k), round_bf16(v)
        return k, v

    def forward(self, h: torch.Tensor, ctx: torch.Tensor, block_rope: tuple[torch.Tensor, torch.Tensor],
                ctx_rope: tuple[torch.Tensor, torch.Tensor], mask: torch.Tensor) -> torch.Tensor:
        c = self.cfg
        b, q_len, _ = h.shape
        q = rope(self.q_norm(self.q_proj(h).view(b, q_len, c.num_heads, c.head_dim)), *block_rope)
        k_blk, v_blk = self.kv(h, *block_rope)
        k_ctx, v_ctx = self.kv(ctx, *ctx_rope)
        keys = torch.cat([k_ctx, k_blk], dim=1).transpose(1, 2)
        values = torch.cat([v_ctx, v_blk], dim=1).transpose(1, 2)
        o = attend(q.transpose(1, 2), keys, values, mask=mask, sink=self.attention_sink_bias if c.sink else None)
        return self.o_proj(o.transpose(1, 2).reshape(b, q_len, c.num_heads * c.head_dim))


class DraftLayer(nn.Module):
    def __init__(self, dcfg: DraftConfig):
        super().__init__()
        self.input_layernorm = RMSNorm(dcfg.hidden_size, dcfg.rms_eps)
        self.self_attn = DraftAttention(dcfg)
        self.post_attention_layernorm = RMSNorm(dcfg.hidden_size, dcfg.rms_eps)
        self.mlp = DenseMLP(dcfg.hidden_size, dcfg.intermediate_size)


def block_mask(anchors: torch.Tensor, context: int, block: int, window: int | None) -> torch.Tensor:
    """bool ``[B, 1, M*block, context + M*block]``: context in each anchor's window, own block only."""
    bsz, m = anchors.shape
    p = torch.arange(context, device=anchors.device)
    a = anchors[:, :, None]
    ctx = p < a
    if window is not None:
        ctx &= p >= a - window
    ctx = ctx.repeat_interleave(block, dim=1)                                          # [B, Q, N]
    own = torch.eye(m, dtype=torch.bool, device=anchors.device)
    own = own.repeat_interleave(block, dim=0).repeat_interleave(block, dim=1)         # [Q, Q]
    return torch.cat([ctx, own.expand(bsz, -1, -1)], dim=-1)[:, None]


class TrainableDrafter(nn.Module):
    def __init__(self, dcfg: DraftConfig):
        super().__init__()
        self.cfg = dcfg
        h = dcfg.hidden_size
        self.fc = nn.Linear(dcfg.context_width, h, bias=False)
        self.hidden_norm = RMSNorm(h, dcfg.rms_eps)
        self.layers = nn.ModuleList(DraftLayer(dcfg) for _ in range(dcfg.num_layers))
        self.norm = RMSNorm(h, dcfg.rms_eps)
        self.mask_embedding = nn.Parameter(torch.empty(h))
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self, std: float = 0.02) -> None:
        out_std = std / math.sqrt(2 * self.cfg.num_layers)
        for name, p in self.named_parameters():
            if name.endswith("norm.weight"):
                p.fill_(1.0)
            elif name.endswith("attention_sink_bias"):
                p.zero_()
            elif name == "fc.weight":
                p.normal_(0.0, 1.0 / math.sqrt(p.shape[1]))      # context vectors are RMS-normed after
            elif name.endswith(("o_proj.weight", "down_proj.weight")):
                p.normal_(0.0, out_std)
            else:
                p.normal_(0.0, std)

    def context(self, hidden: dict[int, torch.Tensor]) -> torch.Tensor:
        """Target hidden states ``{layer: [B, N, H]}`` -> context vectors ``[B, N, H]``."""
        feats = torch.cat([hidden[k] for k in self.cfg.target_layer_ids], dim=-1)
        return self.hidden_norm(self.fc(feats))

    def forward(self, hidden: dict[int, torch.Tensor], anchors: torch.Tensor,
                anchor_embeddings: torch.Tensor) -> torch.Tensor:
        """Final-normed block states ``[B, M, block, H]`` for blocks anchored at ``anchors [B, M]``,
        whose first slot is ``anchor_embeddings [B, M, H]`` (the target's embedding rows)."""
        c = self.cfg
        ctx = self.context(hidden)
        bsz, n, h = ctx.shape
        m, blk = anchors.shape[1], c.block_size
        x = self.mask_embedding.expand(bsz, m, blk, h).clone()
        x[:, :, 0] = anchor_embeddings.to(x.dtype)
        x = x.view(bsz, m * blk, h)
        block_pos = (anchors[:, :, None] + torch.arange(blk, device=anchors.device)).view(bsz, m * blk)
        block_rope = rope_tables(block_pos, c.rotary_dim, c.rope_theta)
        ctx_rope = rope_tables(torch.arange(n, device=ctx.device)[None], c.rotary_dim, c.rope_theta)
        mask = block_mask(anchors, n, blk, c.window)
        for layer in self.layers:
            x = x + layer.self_attn(layer.input_layernorm(x), ctx, block_rope, ctx_rope, mask)
            mlp = layer.mlp
            x = x + swiglu(layer.post_attention_layernorm(x), mlp.gate_proj.weight, mlp.up_proj.weight,
                           mlp.down_proj.weight)
        return rms_norm(x, self.norm.weight, c.rms_eps).view(bsz, m, blk, h)


@dataclass
class DraftStats:
    loss: float
    committed: float          # mean 1 + leading correct slots (greedy DFlash tokens per step, on this data)
    slot_acc: list[float]     # argmax accuracy of slots 1..B-1


def sample_anchors(batch: int, count: int, low: int, high: int, generator: torch.Generator) -> torch.Tensor:
    """``[batch, count]`` anchor positions in ``[low, high]``, distinct within a row where possible."""
    span = high - low + 1
    if span <= 0:
        raise ValueError(f"no room for a block: anchors must lie in [{low}, {high}]")
    if count <= span:
        return torch.rand(batch, span, generator=generator).argsort(dim=-1)[:, :count] + low
    return torch.randint(low, high + 1, (batch, count), generator=generator)


def block_logits(drafter: TrainableDrafter, hidden: dict[int, torch.Tensor], tokens: torch.Tensor,
                 anchors: torch.Tensor, embed: torch.Tensor, lm_head: torch.Tensor
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits ``[B, M, B-1, V]`` of slots 1..B-1 for blocks at ``anchors [B, M]`` of ``tokens [B, N]``,
    and their labels ``[B, M, B-1]`` (the tokens that followed each anchor)."""
    blk = drafter.cfg.block_size
    rows = torch.arange(tokens.shape[0], device=tokens.device)[:, None]
    states = drafter(hidden, anchors, embed[tokens[rows, anchors]])                # [B, M, blk, H]
    offsets = torch.arange(1, blk, device=tokens.device)
    labels = tokens[rows[:, :, None], anchors[:, :, None] + offsets]
    return F.linear(states[:, :, 1:], lm_head), labels


def leading_right(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per block, the number of leading slots whose argmax is the label (int ``[B, M]``)."""
    return (logits.argmax(dim=-1) == labels).int().cumprod(dim=-1).sum(dim=-1)


def teacher_logits(last_hidden: torch.Tensor, anchors: torch.Tensor, block_size: int, norm_weight: torch.Tensor,
                   eps: float, lm_head: torch.Tensor) -> torch.Tensor:
    """The target's own logits ``[B, M, B-1, V]`` for slots 1..B-1 of blocks at ``anchors [B, M]``,
    from its last layer's hidden states ``[B, N, H]`` (slot k is predicted at position anchor + k - 1).
    Free when the drafter reads the last layer anyway: no target forward, one lm_head matmul."""
    rows = torch.arange(last_hidden.shape[0], device=anchors.device)[:, None, None]
    pos = anchors[:, :, None] + torch.arange(block_size - 1, device=anchors.device)
    h = rms_norm(last_hidden[rows, pos].float(), norm_weight.float(), eps)
    return F.linear(h.to(lm_head.dtype), lm_head)


def draft_loss(drafter: TrainableDrafter, hidden: dict[int, torch.Tensor], tokens: torch.Tensor,
               anchors: torch.Tensor, embed: torch.Tensor, lm_head: torch.Tensor,
               gamma: float, teacher: torch.Tensor | None = None, kd: float = 0.0) -> tuple[torch.Tensor, DraftStats]:
    """Weighted CE of slots 1..B-1 for blocks at ``anchors [B, M]`` of sequences ``tokens [B, N]``.

    With ``teacher`` logits (``teacher_logits``) and ``kd`` > 0, each slot's loss is
    ``(1 - kd) * CE(greedy label) + kd * CE(softmax(teacher))``: the target's whole distribution,
    not only its argmax, as a regulariser against memorising the generated sequences."""
    logits, labels = block_logits(drafter, hidden, tokens, anchors, embed, lm_head)
    flat = logits.float()
    ce = F.cross_entropy(flat.reshape(-1, flat.shape[-1]), labels.reshape(-1), reduction="none").view(labels.shape)
    if teacher is not None and kd > 0:
        soft = -(torch.softmax(teacher.float(), dim=-1) * torch.log_softmax(flat, dim=-1)).sum(dim=-1)
        ce = (1 - kd) * ce + kd * soft
    offsets = torch.arange(1, drafter.cfg.block_size, device=tokens.device)
    w = torch.exp(-(offsets.float() - 1) / gamma)
    loss = (ce * w).sum(dim=-1).mean() / w.sum()
    with torch.no_grad():
        right = logits.argmax(dim=-1) == labels
        lead = leading_right(logits, labels).float()
        stats = DraftStats(float(loss), 1.0 + float(lead.mean()), right.float().mean(dim=(0, 1)).tolist())
    return loss, stats


@torch.no_grad()
def leading_commits(drafter: TrainableDrafter, hidden: dict[int, torch.Tensor], tokens: torch.Tensor, start: int,
                    embed: torch.Tensor, lm_head: torch.Tensor, chunk: int = 64) -> torch.Tensor:
    """Tokens greedy DFlash commits at every anchor ``start .. N - B`` of greedy sequences
    ``tokens [B, N]`` (1 + leading right slots): int ``[B, N - B + 1 - start]``."""
    bsz, n = tokens.shape
    every = torch.arange(start, n - drafter.cfg.block_size + 1, device=tokens.device)
    out = [1 + leading_right(*block_logits(drafter, hidden, tokens, a[None].expand(bsz, -1), embed, lm_head))
           for a in every.split(chunk)]
    return torch.cat(out, dim=1)


def decoder_walk(commits: torch.Tensor) -> tuple[int, int]:
    """(tokens, steps) of greedy DFlash through each row of ``commits [B, A]`` (``leading_commits``):
    from anchor 0, a step commits ``commits[r, a]`` tokens and the next anchor is ``a + commits[r, a]``;
    a row ends where no full block is left."""
    tokens = steps = 0
    for row in commits.tolist():
        a = 0
        while a < len(row):
            tokens += row[a]
            steps += 1
            a += row[a]
    return tokens, steps
