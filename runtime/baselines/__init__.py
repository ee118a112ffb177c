"""Baselines the megakernel is measured against: what a user without tilewarp would run.

`torch_decoder` is a gpt-fast-style PyTorch decoder of the same model (bf16 weights,
static KV cache, static shapes) that runs eagerly, replayed from a CUDA graph, or
compiled by torch.compile (`modes`). `params` loads its weights once.
"""
