"""DFlash tests run on one thread: tiny tensors gain nothing from more, and CI has 2 cores."""

import torch

torch.set_num_threads(1)
