"""Counter-based sampling (`pipeline/counter_rng.py`) and the programs that use it.

* the hash is lowbias32 exactly (checked against a plain-integer restatement) and its
  values are pinned, so a CUDA port can be checked against the same numbers;
* the perturbed argmax draws from softmax(logits / T) (chi-square, 6 tokens);
* the decode program samples what the reference sampler draws from the reference's
  logits, and the sampled DFlash program (acceptance on the device) emits exactly the
  tokens sampled plain decoding emits with the same seed: the noise is keyed by the
  position of the chosen token, so grouping tokens into DFlash steps changes nothing.
"""

from __future__ import annotations

import math

import pytest
import torch

from test_dflash_programs import plant
from tilewarp.pipeline.counter_rng import keys, mix32, sample_rows, uniforms
from tilewarp.pipeline.cpu_exec import CpuExecutor
from tilewarp.pipeline.dflash.config import tiny_drafter
from tilewarp.pipeline.dflash.decoder import plain_decode
from tilewarp.pipeline.dflash.draft_model import DraftModel
from tilewarp.pipeline.dflash.program_loop import generate
from tilewarp.pipeline.dflash.weights import random_draft_weights
from tilewarp.pipeline.errors import InputError
from tilewarp.pipeline.graph.dflash_step import build_dflash_step
from tilewarp.pipeline.graph.step import build_step
from tilewarp.pipeline.lower import lower
from tilewarp.pipeline.presets import preset
from tilewarp.pipeline.random_model import random_weights
from tilewarp.pipeline.reference import ReferenceModel
from tilewarp.pipeline.sampling import SamplingParams
from tilewarp.pipeline.schedule import DeviceModel, schedule

CFG = preset("tiny")
DCFG = tiny_drafter(CFG)
B = DCFG.block_size
PROMPT = torch.randint(0, CFG.vocab_size, (40,), generator=torch.Generator().manual_seed(0)).tolist()
N = 64
CAP = len(PROMPT) + N + 2 * B
TEMP = 0.8


# ------------------------------------------------------------------ the hash
def lowbias32(x: int) -> int:
    x &= 0xFFFFFFFF
    x ^= x >> 16
    x = (x * 0x7FEB352D) & 0xFFFFFFFF
    x ^= x >> 15
    x = (x * 0x846CA68B) & 0xFFFFFFFF
    return x ^ (x >> 16)


def test_mix32_is_lowbias32_on_every_bit_pattern_class():
    xs = torch.cat([torch.tensor([0, 1, 0xFFFF, 0x10000, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF]),
                    torch.randint(0, 2 ** 32, (5000,), generator=torch.Generator().manual_seed(1))])
    assert mix32(xs).tolist() == [lowbias32(int(x)) for x in xs]


def test_keys_and_uniforms_are_pinned_for_ports():
    """key(s, q, v) = mix32(mix32(mix32(s) + q) + v) mod 2**32; these numbers must come out
    of any other implementation (CUDA) too."""
    assert keys(1, torch.tensor([0, 5]), torch.tensor([0, 1, 2])).tolist() == [
        [604019821, 1780824202, 3431222951], [3828134043, 2181118130, 2070330550]]
    k = lowbias32(lowbias32(lowbias32(2 ** 32 - 1) + 7) + 151669)
    assert keys(2 ** 32 - 1, torch.tensor([7]), torch.tensor([151669])).item() == k
    assert uniforms(2 ** 32 - 1, torch.tensor([7]), torch.tensor([151669])).item() == (2 * (k >> 9) + 1) / 2 ** 24


def test_uniforms_are_exact_odd_multiples_of_2_to_the_minus_24_and_distinct_per_token():
    u = uniforms(5, torch.arange(3), torch.arange(CFG.vocab_size))
    scaled = u.double() * 2 ** 24
    assert (scaled == scaled.round()).all() and (scaled.round().long() % 2 == 1).all()
    assert (u > 0).all() and (u < 1).all()
    k = keys(5, torch.arange(3), torch.arange(CFG.vocab_size))
    assert all(len(set(row.tolist())) == CFG.vocab_size for row in k), "a bijection over tokens per position"


def chi_square_p_value(observed: torch.Tensor, expected: torch.Tensor) -> float:
    observed, expected = observed.double(), expected.double() / expected.sum() * observed.sum()
    stat = ((observed - expected) ** 2 / expected).sum()
    dof = torch.tensor(float(observed.numel() - 1), dtype=torch.float64)
    return float(torch.special.gammaincc(dof / 2, stat / 2))


def test_the_perturbed_argmax_draws_from_softmax_of_logits_over_t():
    logits = torch.tensor([[1.0, 0.2, -0.5, 2.0, 0.0, -3.0]])
    n = 40_000
    draws = torch.tensor(sample_rows(logits.expand(n, -1), 9, 0, TEMP))   # row q chooses position q
    counts = torch.bincount(draws, minlength=6)
    law = torch.softmax(logits[0] / TEMP, dim=-1)
    assert chi_square_p_value(counts, law) > 1e-4
    assert chi_square_p_value(counts, torch.softmax(logits[0], dim=-1)) < 1e-6, "the test can tell T apart"


def test_temperature_zero_is_greedy():
    logits = torch.randn(4, 50, generator=torch.Generator().manual_seed(0))
    assert sample_rows(logits, 3, 10, 0.0) == logits.argmax(-1).tolist()


# ------------------------------------------------------------------ programs
@pytest.fixture(scope="module")
def weights():
    return random_weights(CFG, 0)


@pytest.fixture(scope="module")
def reference_samples(weights) -> list[int]:
    """Plain sampled decoding with the reference model and the reference sampler."""
    ref = ReferenceModel(weights, capacity=CAP)
    out = [sample_rows(ref.prefill(PROMPT).logits[-1:], 4, len(PROMPT), TEMP)[0]]
    while len(out) < N:
        out.append(sample_rows(ref.decode(out[-1]).logits, 4, ref.position, TEMP)[0])
    return out


def prefill(weights, dweights=None):
    ref = ReferenceModel(weights, capacity=CAP)
    out = ref.prefill(PROMPT, return_hidden=DCFG.target_layer_ids)
    drafter = None
    if dweights is not None:
        drafter = DraftModel(DCFG, dweights, weights, capacity=CAP)
        drafter.append_context(out.hidden, range(len(PROMPT)))
    return ref, drafter, sample_rows(out.logits[-1:], 4, len(PROMPT), TEMP)[0]


def test_the_decode_program_samples_what_the_reference_sampler_draws(weights, reference_samples):
    ref, _, first = prefill(weights)
    p = lower(schedule(build_step(CFG, 1, kind="decode", capacity=CAP), DeviceModel(workers=8)))
    ex = CpuExecutor(p, weights, ref.cache)
    got = [first] + ex.decode(first, N - 1, seed=2, temperature=TEMP, sample_seed=4)
    assert got == reference_samples
    greedy = plain_decode(ReferenceModel(weights, capacity=CAP), PROMPT, SamplingParams(max_tokens=N))
    assert sum(a != b for a, b in zip(got, greedy)) > N // 2, "samples, not the greedy tokens"


def test_sampled_dflash_programs_emit_exactly_what_sampled_plain_decoding_emits(weights, reference_samples):
    dweights = random_draft_weights(DCFG, 1)
    p = lower(schedule(build_dflash_step(CFG, DCFG, capacity=CAP), DeviceModel(workers=8)))
    ref, drafter, first = prefill(weights, dweights)
    ex = CpuExecutor(p, weights, ref.cache, draft_weights=dweights, draft_cache=drafter.cache)
    steps = generate(ex, first, N, B, steps_per_launch=8, temperature=TEMP, sample_seed=4)
    assert [t for s in steps for t in s] == reference_samples

    ref, drafter, first = prefill(weights, dweights)
    ex = CpuExecutor(p, weights, ref.cache, draft_weights=dweights, draft_cache=drafter.cache)
    other = generate(ex, first, 24, B, temperature=TEMP, sample_seed=5)
    assert [t for s in other for t in s] != reference_samples[:24], "another seed, other samples"


def test_a_perfect_drafter_commits_whole_sampled_blocks(weights, reference_samples, monkeypatch):
    """Proposals planted from the sampled continuation: every draw equals its proposal,
    so each step commits B tokens, and they are still exactly the samples."""
    dweights = random_draft_weights(DCFG, 1)
    p = lower(schedule(build_dflash_step(CFG, DCFG, capacity=CAP), DeviceModel(workers=8)))
    ref, drafter, first = prefill(weights, dweights)
    ex = CpuExecutor(p, weights, ref.cache, draft_weights=dweights, draft_cache=drafter.cache)
    plant(monkeypatch, p, PROMPT + reference_samples + [0] * B)
    steps = ex.dflash(first, 4, temperature=TEMP, sample_seed=4)
    assert [len(s) for s in steps] == [B] * 4
    assert [first] + [t for s in steps for t in s] == reference_samples[:4 * B + 1]


def test_a_bad_temperature_is_refused(weights):
    p = lower(schedule(build_step(CFG, 1, kind="decode", capacity=CAP), DeviceModel(workers=2)))
    ex = CpuExecutor(p, weights, ReferenceModel(weights, capacity=CAP).cache)
    for bad in (-1.0, math.inf, math.nan):
        with pytest.raises(InputError, match="temperature"):
            ex.decode(1, 1, temperature=bad)
