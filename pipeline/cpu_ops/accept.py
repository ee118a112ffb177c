"""ACCEPT: DFlash acceptance on the device, so the next step needs no host.

Inputs: the t-1 proposals d_1..d_{t-1} (prop_off) and the target's choice per verified
row c_0..c_{t-1} (choice_off; row i is the target's token after block slot i). Greedy
rule (`dflash.verify.verify_greedy`): accept d_i while d_i == c_{i-1}; with n accepted,
commit d_1..d_n and c_n. The same rule is lossless sampling for an argmax drafter when
c_i is a sample from the target's p_i rather than its argmax (accept iff the sample
equals the proposal, else emit the sample: `shared/MODEL_FACTS.md`), so a sampling
program changes what writes the choices, not this op.

Writes out row STATE_STEP = [n + 1, committed tokens, -1 padding], the next anchor c_n
to tok_off (with hist_off >= 0, first the anchor and d_1..d_n into the token history at
positions pos..pos+n, which COPY_DRAFT reads), and advances the state: position += n + 1
(the caches hold K/V for all t verified positions; moving the position back over the
rejected ones is the rollback), step += 1.
"""

import torch

from ..graph.ops import STATE_POS, STATE_STEP, STATE_WORDS
from .context import Ctx


def accept_greedy(proposals: list[int], choices: list[int]) -> list[int]:
    """The committed tokens: accepted proposals, then the target's choice after them."""
    n = 0
    while n < len(proposals) and proposals[n] == choices[n]:
        n += 1
    return proposals[:n] + [choices[n]]


def run(ctx: Ctx, a: dict[str, int]) -> None:
    t = a["t"]
    committed = accept_greedy(ctx.ints(a["prop_off"], t - 1).tolist(), ctx.ints(a["choice_off"], t).tolist())
    state = ctx.ints(a["state_off"], STATE_WORDS)
    row = ctx.ints(a["out_off"] + int(state[STATE_STEP]) * a["out_ld"], t + 1)
    row.fill_(-1)
    row[0] = len(committed)
    row[1:1 + len(committed)] = torch.tensor(committed, dtype=torch.int32)
    tok = ctx.ints(a["tok_off"], 1)
    if a["hist_off"] >= 0:
        kept = [int(tok[0])] + committed[:-1]
        ctx.ints(a["hist_off"] + int(state[STATE_POS]), len(kept)).copy_(torch.tensor(kept, dtype=torch.int32))
    tok[0] = committed[-1]
    state[STATE_POS] += len(committed)
    state[STATE_STEP] += 1

