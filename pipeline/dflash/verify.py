"""Lossless verification of a DFlash block (Leviathan et al. 2023; Chen et al. 2023).

The drafter proposes d_1..d_g, each drawn from its proposal distribution q_i; one target
pass gives p_1..p_{g+1}, where p_i is the target's distribution for the token d_i stands
for (target logits row i-1: the row of the token before it) and p_{g+1} the one after
the last proposal. ``p`` and ``q`` both come from ``sampling.probabilities`` with the
request's parameters, so they went through the identical temperature / top-k / top-p.

Sampling rule, for i = 1..g: draw u ~ U(0, 1]; accept d_i if u <= min(1, p_i(d_i) / q_i(d_i));
otherwise emit one token from norm(max(0, p_i - q_i)) and stop. If all g are accepted,
emit a bonus token from p_{g+1}. Every emitted token is then distributed exactly as p.
u is drawn from (0, 1] so that a token with p_i(d_i) = 0 is never accepted.

Greedy rule: accept while d_i == argmax p_i; at the first mismatch emit argmax p_i; all
accepted: bonus argmax p_{g+1}. (It is the sampling rule with one-hot p and q.)

Draws use one uniform per decision from a seeded CPU generator, in float64.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from ..errors import InputError
from ..sampling import SamplingParams, probabilities

#: A residual norm(max(0, p - q)) with total mass at or below this is treated as empty.
#: In exact arithmetic a rejection implies p_i(d_i) < q_i(d_i), so the residual's mass, the
#: total-variation distance between p_i and q_i, is positive; it can only vanish when p
#: and q differ by rounding alone, where the rejection itself had probability ~ this
#: mass. Sampling from p_i then is the only sensible choice and costs at most that much.
RESIDUAL_FLOOR = 1e-12


@dataclass(frozen=True)
class Verdict:
    """What one verification commits."""

    tokens: list[int]    # 1..g+1 tokens: the accepted proposals, then the correction or bonus token
    accepted: int        # how many proposals were accepted (0..g)


def categorical(probs: torch.Tensor, generator: torch.Generator) -> int:
    """One token from ``probs [V]`` (not necessarily normalised) by inverse CDF in float64."""
    cdf = probs.detach().to("cpu", torch.float64).cumsum(dim=0)
    u = torch.rand(1, dtype=torch.float64, generator=generator) * cdf[-1]
    index = int(torch.searchsorted(cdf, u, right=True))
    if index >= cdf.numel():    # u rounded up to the total: take the last token with mass
        index = int(probs.nonzero()[-1])
    return index


def residual_distribution(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """norm(max(0, p - q)) in float64; p itself when that residual is empty (see RESIDUAL_FLOOR)."""
    r = (p.double() - q.double()).clamp_min(0.0)
    total = float(r.sum())
    if not total > RESIDUAL_FLOOR:
        return p.double() / p.double().sum()
    return r / total


def sample_proposals(draft_logits: torch.Tensor, params: SamplingParams,
                     generator: torch.Generator) -> tuple[list[int], torch.Tensor]:
    """Proposals d_i and the distributions q_i they were drawn from (``[g, V]``).

    Greedy: d_i = argmax of the draft logits (q_i one-hot). Sampling: d_i ~ q_i, each slot
    drawn independently, as the block's slots are predicted in one parallel pass.
    """
    q = probabilities(draft_logits, params)
    if params.greedy:
        return q.argmax(dim=-1).tolist(), q
    return [categorical(row, generator) for row in q], q


def verify_greedy(draft_tokens: Sequence[int], target_logits: torch.Tensor) -> Verdict:
    """Greedy acceptance: target_logits ``[g+1, V]``, row i is the target's prediction after slot i."""
    _check_shapes(draft_tokens, target_logits)
    best = target_logits.argmax(dim=-1).tolist()
    for i, d in enumerate(draft_tokens):
        if d != best[i]:
            return Verdict(tokens=list(draft_tokens[:i]) + [best[i]], accepted=i)
    g = len(draft_tokens)
    return Verdict(tokens=list(draft_tokens) + [best[g]], accepted=g)


def verify_sampling(draft_tokens: Sequence[int], draft_probs: torch.Tensor, target_probs: torch.Tensor,
                    generator: torch.Generator) -> Verdict:
    """Speculative-sampling acceptance: q ``[g, V]``, p ``[g+1, V]`` (both from ``probabilities``)."""
    _check_shapes(draft_tokens, target_probs)
    g = len(draft_tokens)
    if tuple(draft_probs.shape) != (g, target_probs.shape[-1]):
        raise InputError(f"draft_probs: need [{g}, {target_probs.shape[-1]}], got {tuple(draft_probs.shape)}")
    p = target_probs.detach().to("cpu", torch.float64)
    q = draft_probs.detach().to("cpu", torch.float64)
    for i, d in enumerate(draft_tokens):
        if not q[i, d] > 0:
            raise InputError(f"draft_tokens: proposal {i} (token {d}) has draft probability 0; it cannot have been "
                             "drawn from q")
        u = 1.0 - float(torch.rand(1, dtype=torch.float64, generator=generator))   # (0, 1]
        if u * q[i, d] <= p[i, d]:          # u <= p/q, without dividing
            continue
        return Verdict(tokens=list(draft_tokens[:i]) + [categorical(residual_distribution(p[i], q[i]), generator)],
                       accepted=i)
    return Verdict(tokens=list(draft_tokens) + [categorical(p[g], generator)], accepted=g)


def verify_block(draft_tokens: Sequence[int], draft_probs: torch.Tensor, target_logits: torch.Tensor,
                 params: SamplingParams, generator: torch.Generator) -> Verdict:
    """Apply the request's rule: greedy, or sampling with p = probabilities(target_logits)."""
    if params.greedy:
        return verify_greedy(draft_tokens, target_logits)
    return verify_sampling(draft_tokens, draft_probs, probabilities(target_logits, params), generator)


def _check_shapes(draft_tokens: Sequence[int], target: torch.Tensor) -> None:
    g = len(draft_tokens)
    if target.ndim != 2 or target.shape[0] != g + 1:
        raise InputError(f"target: need [{g + 1}, vocab] rows for {g} proposals, got {tuple(target.shape)}")
    vocab = target.shape[1]
    for i, d in enumerate(draft_tokens):
        if isinstance(d, bool) or not isinstance(d, int) or not 0 <= d < vocab:
            raise InputError(f"draft_tokens: proposal {i} is {d!r}, not a token id in [0, {vocab})")
