"""DFlash block speculative decoding: the drafter, its checkpoint, the acceptance rules, the decode loop.

See ``shared/MODEL_FACTS.md`` ("DFlash", "Lossless verification") for the model facts
these modules implement, and each module's docstring for the choices it makes.
"""

from .checkpoint import load_draft_checkpoint, make_draft_checkpoint, save_draft_checkpoint
from .config import DraftConfig, mimo_drafter, tiny_drafter
from .decoder import AcceptanceStats, DFlashDecoder, StepRecord, plain_decode
from .draft_model import DraftModel, DraftOutput
from .tensor_specs import draft_tensor_specs
from .verify import Verdict, residual_distribution, sample_proposals, verify_block, verify_greedy, verify_sampling
from .weights import DraftWeights, random_draft_tensors, random_draft_weights

__all__ = [
    "DraftConfig", "tiny_drafter", "mimo_drafter", "DraftWeights", "random_draft_weights", "random_draft_tensors",
    "draft_tensor_specs", "save_draft_checkpoint", "load_draft_checkpoint", "make_draft_checkpoint", "DraftModel",
    "DraftOutput", "Verdict", "verify_greedy", "verify_sampling", "verify_block", "sample_proposals",
    "residual_distribution", "DFlashDecoder", "AcceptanceStats", "StepRecord", "plain_decode",
]
