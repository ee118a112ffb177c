"""Token streams and training windows.

A split is encoded once into one flat stream: every file's tokens followed by
``<|endoftext|>``. Training windows are random slices of ``seq_len + 1`` tokens (inputs and
shifted targets); windows may cross a file boundary, which teaches the model what the
separator means. The stream lives on the training device and windows are gathered there,
so the host never feeds the GPU.
"""

from __future__ import annotations

from typing import Sequence

import torch
from tokenizers import Tokenizer

from .data import SourceFile


def encode_stream(tok: Tokenizer, files: Sequence[SourceFile], eot: int) -> torch.Tensor:
    """int64 tokens of all files, each followed by ``eot`` (batch-encoded: uses every core)."""
    ids: list[int] = []
    for enc in tok.encode_batch([f.text for f in files]):
        ids.extend(enc.ids)
        ids.append(eot)
    return torch.tensor(ids, dtype=torch.int64)


class WindowSampler:
    """Random ``[batch, seq_len + 1]`` windows of a stream, drawn with a seeded generator."""

    def __init__(self, stream: torch.Tensor, seq_len: int, device: torch.device, seed: int = 0):
        if stream.numel() < seq_len + 2:
            raise ValueError(f"stream of {stream.numel()} tokens is shorter than one window of {seq_len + 1}")
        self.stream = stream.to(device)
        self.seq_len = seq_len
        self.generator = torch.Generator(device="cpu").manual_seed(seed)
        self._span = torch.arange(seq_len + 1, device=device)

    def sample(self, batch: int) -> torch.Tensor:
        starts = torch.randint(0, self.stream.numel() - self.seq_len - 1, (batch,), generator=self.generator)
        return self.stream[starts.to(self.stream.device)[:, None] + self._span]

    def fixed(self, batches: int, batch: int, seed: int) -> list[torch.Tensor]:
        """The same windows every call (evaluation): a separate generator seeded with ``seed``."""
        g = torch.Generator(device="cpu").manual_seed(seed)
        out = []
        for _ in range(batches):
            starts = torch.randint(0, self.stream.numel() - self.seq_len - 1, (batch,), generator=g)
            out.append(self.stream[starts.to(self.stream.device)[:, None] + self._span])
        return out
