"""DFlash sampling is lossless: every emitted token is distributed exactly as the target's p.

Two levels, both against closed-form laws on a 6-token vocabulary, by chi-square:

* the acceptance rule alone: fixed p_1..p_4 and q_1..q_3 tables; the k-th committed token
  of a block (present when the k-1 before it were accepted proposals) must follow p_k;
* the whole decode loop (proposals, verification, rollback, next anchor) over a Markov-chain
  target: consecutive pairs of generated tokens must follow the chain's law.

Each check is also run with the correction drawn from p instead of norm(max(0, p - q)),
the classic bug, and must then fail: the tests can tell a lossless rule from a lossy one.
"""

from __future__ import annotations

import math

import pytest
import torch

from dflash_toys import TableDraft, TableTarget
from tilewarp.pipeline.dflash import verify as verify_mod
from tilewarp.pipeline.dflash.copy_draft import CopyDraft
from tilewarp.pipeline.dflash.decoder import DFlashDecoder
from tilewarp.pipeline.dflash.verify import categorical, verify_sampling
from tilewarp.pipeline.sampling import SamplingParams, probabilities

V = 6
# About 20 chi-square checks run on correct code, so a threshold of 1e-4 keeps the chance that
# any of them fails by bad luck (after a change to how random numbers are consumed) near 0.2%;
# the broken rule lands far below FAIL (1e-14 or smaller with these tables and seeds).
PASS = 1e-4          # a correct rule must give p-values above this ...
FAIL = 1e-6          # ... and the broken one below this

PARAMS = {
    "temperature-1": SamplingParams(temperature=1.0, seed=11),
    "temperature-0.7-top-k-4-top-p-0.9": SamplingParams(temperature=0.7, top_k=4, top_p=0.9, seed=12),
}


def chi_square_p_value(observed: torch.Tensor, expected: torch.Tensor) -> float:
    """P-value of observed counts under the law ``expected`` (cells of probability 0 must be empty)."""
    observed, expected = observed.double().flatten(), expected.double().flatten()
    impossible = expected == 0
    assert observed[impossible].sum() == 0, "a token of probability 0 was emitted"
    n = observed.sum()
    o, e = observed[~impossible], expected[~impossible] / expected.sum() * n
    stat = ((o - e) ** 2 / e).sum()
    dof = torch.tensor(float(o.numel() - 1), dtype=torch.float64)
    return float(torch.special.gammaincc(dof / 2, stat / 2))    # chi-square survival function


def break_residual(monkeypatch: pytest.MonkeyPatch) -> None:
    """The classic bug: after a rejection, draw the correction from p rather than norm(max(0, p - q))."""
    monkeypatch.setattr(verify_mod, "residual_distribution", lambda p, q: p.double() / p.double().sum())


def test_chi_square_survival_function_is_right():
    # With 2 degrees of freedom the survival function is exp(-x/2); with 1 it is erfc(sqrt(x/2)).
    expected = torch.tensor([0.25, 0.25, 0.5])
    counts = torch.tensor([30.0, 20.0, 50.0])               # statistic 2.0 on 2 dof
    assert chi_square_p_value(counts, expected) == pytest.approx(math.exp(-1.0), rel=1e-9)
    counts = torch.tensor([60.0, 40.0])                     # statistic 4.0 on 1 dof
    assert chi_square_p_value(counts, torch.tensor([0.5, 0.5])) == pytest.approx(math.erfc(2.0 ** 0.5), rel=1e-9)


# ======================================================================= the rule alone
G = 3
TABLES = torch.Generator().manual_seed(2024)
P_LOGITS = torch.randn(G + 1, V, generator=TABLES) * 1.5
Q_LOGITS = torch.randn(G, V, generator=TABLES) * 1.5


def committed_by_slot(params: SamplingParams, trials: int) -> tuple[torch.Tensor, torch.Tensor]:
    """counts[k, t]: blocks whose k-th committed token was t; and accepted-count histogram."""
    p, q = probabilities(P_LOGITS, params).double(), probabilities(Q_LOGITS, params).double()
    generator = torch.Generator().manual_seed(params.seed)
    counts = torch.zeros(G + 1, V)
    accepted = torch.zeros(G + 1)
    for _ in range(trials):
        proposals = [categorical(q[i], generator) for i in range(G)]
        verdict = verify_sampling(proposals, q, p, generator)
        for k, token in enumerate(verdict.tokens):
            counts[k, token] += 1
        accepted[verdict.accepted] += 1
    return counts, accepted


@pytest.mark.parametrize("name", sorted(PARAMS))
def test_each_committed_token_follows_the_target_distribution(name):
    params = PARAMS[name]
    counts, accepted = committed_by_slot(params, trials=20_000)
    assert (accepted > 100).all(), f"every outcome, 0..{G} accepted, must be well represented: {accepted}"
    p = probabilities(P_LOGITS, params)
    for k in range(G + 1):
        assert chi_square_p_value(counts[k], p[k]) > PASS, f"committed token {k + 1} does not follow p_{k + 1}"


def test_a_correction_drawn_from_p_is_caught(monkeypatch):
    break_residual(monkeypatch)
    params = PARAMS["temperature-1"]
    counts, _ = committed_by_slot(params, trials=5_000)
    assert chi_square_p_value(counts[0], probabilities(P_LOGITS, params)[0]) < FAIL


# ================================================================== the whole decode loop
B = 4
STEPS_OUT = 6
CHAIN = torch.Generator().manual_seed(7)
TARGET_LOGITS = torch.randn(V, V, generator=CHAIN) * 1.5
# Slot 1 of the draft half-knows the chain (so runs of accepted tokens happen); later slots guess.
DRAFT_LOGITS = torch.randn(V, B, V, generator=CHAIN) * 1.5
DRAFT_LOGITS[:, 1] = TARGET_LOGITS + 0.5 * torch.randn(V, V, generator=CHAIN)
PROMPT = [2, 5, 0]


def pair_counts(params: SamplingParams, trials: int, copy: CopyDraft | None = None) -> tuple[torch.Tensor, list[int]]:
    """counts[k, a, b]: runs whose generated tokens k+1, k+2 were a, b; plus the step histogram."""
    decoder = DFlashDecoder(TableTarget(TARGET_LOGITS), TableDraft(DRAFT_LOGITS), params, copy)
    counts = torch.zeros(STEPS_OUT - 1, V, V)
    histogram = [0] * B
    for _ in range(trials):
        out = [t for step in decoder.generate(PROMPT, max_tokens=STEPS_OUT) for t in step]
        assert len(out) == STEPS_OUT
        for k in range(STEPS_OUT - 1):
            counts[k, out[k], out[k + 1]] += 1
        histogram = [h + s for h, s in zip(histogram, decoder.stats.histogram)]
    return counts, histogram


def chain_pair_laws(params: SamplingParams) -> torch.Tensor:
    """law[k, a, b] = P(token k+1 = a, token k+2 = b) when sampling the chain token by token."""
    step = probabilities(TARGET_LOGITS, params).double()         # step[a, b] = P(next = b | last = a)
    marginal = step[PROMPT[-1]]
    laws = []
    for _ in range(STEPS_OUT - 1):
        laws.append(marginal[:, None] * step)
        marginal = marginal @ step
    return torch.stack(laws)


@pytest.mark.parametrize("name", sorted(PARAMS))
def test_dflash_generation_follows_the_target_chain(name):
    params = PARAMS[name]
    counts, histogram = pair_counts(params, trials=5_000)
    assert histogram[0] > 0 and histogram[B - 1] > 0 and sum(histogram[1:B - 1]) > 0, histogram
    laws = chain_pair_laws(params)
    for k in range(STEPS_OUT - 1):
        assert chi_square_p_value(counts[k], laws[k]) > PASS, f"tokens {k + 1}, {k + 2} do not follow the chain"


def test_dflash_generation_with_copy_drafting_follows_the_target_chain():
    """Copied proposals (one-hot q: `copy_draft.py`) on a 6-token vocabulary, where a one-token
    suffix almost always has an earlier occurrence, so most blocks start with a copy."""
    params = PARAMS["temperature-0.7-top-k-4-top-p-0.9"]
    counts, histogram = pair_counts(params, trials=5_000, copy=CopyDraft(min_match=1, trust_permille=1000))
    assert histogram[0] > 0 and sum(histogram[1:]) > 0, histogram
    laws = chain_pair_laws(params)
    for k in range(STEPS_OUT - 1):
        assert chi_square_p_value(counts[k], laws[k]) > PASS, f"tokens {k + 1}, {k + 2} do not follow the chain"


def test_dflash_generation_with_a_correction_drawn_from_p_is_caught(monkeypatch):
    break_residual(monkeypatch)
    params = PARAMS["temperature-1"]
    counts, _ = pair_counts(params, trials=2_000)
    laws = chain_pair_laws(params)
    assert min(chi_square_p_value(counts[k], laws[k]) for k in range(STEPS_OUT - 1)) < FAIL
