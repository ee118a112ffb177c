"""The training-pipeline tests: one torch thread (CI has 2 cores, and more threads than free
cores slow small ops down many times), and ``examples.train`` importable under plain
``pytest`` too (``python -m pytest`` already has the repository root on the path)."""

import sys
from pathlib import Path

import torch

torch.set_num_threads(1)
ROOT = str(Path(__file__).resolve().parents[2])
if ROOT not in sys.path:
    sys.path.append(ROOT)
