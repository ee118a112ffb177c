"""ROUTE: sigmoid router -> slot table. Choice = top-k of sigmoid + bias (group-limited when
n_group > 1); weights = the chosen unbiased scores, renormalised, times the routed scaling.
Slots are the distinct chosen experts in ascending id order; the table layout is
`graph.ops.slot_table_fields`."""

import torch

from ..errors import DeviceError, nonfinite_message
from ..graph.ops import slot_table_fields
from .context import Ctx


def choose(scores: torch.Tensor, bias: torch.Tensor, k: int, n_group: int, topk_group: int) -> torch.Tensor:
    choice = scores + bias
    if n_group > 1:
        t, e = choice.shape
        grouped = choice.view(t, n_group, e // n_group)
        gscore = grouped.topk(min(2, e // n_group), dim=-1).values.sum(dim=-1)
        keep = torch.zeros_like(gscore, dtype=torch.bool).scatter_(1, gscore.topk(topk_group, dim=-1).indices, True)
        choice = grouped.masked_fill(~keep[..., None], float("-inf")).view(t, e)
    return choice.topk(k, dim=-1).indices


def run(ctx: Ctx, a: dict[str, int]) -> None:
    cfg, t = ctx.cfg, a["t"]
    e, k = cfg.num_experts, cfg.top_k
    slots = min(t * k, e)
    scores = torch.sigmoid(ctx.rows(a["logits_off"], e, t, e))
    bias = ctx.w(a["w_bias"]).float()
    nan = (scores + bias).isnan().any(dim=-1)
    if nan.any():   # as the megakernel: a NaN has no place in the order
        raise DeviceError("ROUTE: " + nonfinite_message("router scores", int(nan.nonzero()[0, 0])))
    ids = choose(scores, bias, k, cfg.n_group, cfg.topk_group)     # [t, k]
    w = scores.gather(-1, ids)
    if cfg.norm_topk_prob:
        w = w / (w.sum(dim=-1, keepdim=True) + 1e-20)
    w = w * cfg.routed_scaling
    experts = ids.unique(sorted=True)
    f = slot_table_fields(slots, t, k)
    tab = ctx.ints(a["table_off"], f["tok_weight"] + t * k)
    tab.zero_()
    tab[f["n_used"]] = len(experts)
    slot_of = {int(x): s for s, x in enumerate(experts.tolist())}
    for s, x in enumerate(experts.tolist()):
        toks = (ids == x).any(dim=-1).nonzero()[:, 0]
        tab[f["expert"] + s] = x
        tab[f["count"] + s] = len(toks)
        tab[f["tokens"] + s * t: f["tokens"] + s * t + len(toks)] = toks.int()
    tab[f["tok_slot"]: f["tok_slot"] + t * k] = torch.tensor([slot_of[int(x)] for x in ids.flatten()], dtype=torch.int32)
    tab[f["tok_weight"]: f["tok_weight"] + t * k] = w.flatten().float().view(torch.int32)
