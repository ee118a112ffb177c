"""Shared settings for the pipeline tests: one torch thread (CI has 2 cores and the CPU
executor runs many tiny ops, where thread start-up costs more than it saves)."""

import torch

torch.set_num_threads(1)
