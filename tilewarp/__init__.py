"""tilewarp: a persistent-megakernel runtime for low-latency MoE decoding.

`tilewarp.pipeline` decides the work (model, reference, task graphs, programs);
`tilewarp.runtime` runs it (NVRTC build, megakernel, engine, CLI); `tilewarp.csrc`
holds the device-side sources.
"""

__version__ = "0.1.0"
