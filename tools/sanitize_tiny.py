"""A few megakernel decode steps on `tiny`, small enough to run under compute-sanitizer:

    compute-sanitizer --tool memcheck --report-api-errors no --kernel-name kns=tw_megakernel python3 -P tools/sanitize_tiny.py
    compute-sanitizer --tool racecheck --kernel-name kns=tw_megakernel python3 -P tools/sanitize_tiny.py
"""

import torch

from tilewarp.pipeline.graph.step import build_step
from tilewarp.pipeline.lower import lower
from tilewarp.pipeline.presets import preset
from tilewarp.pipeline.random_model import random_weights
from tilewarp.pipeline.reference import ReferenceModel
from tilewarp.pipeline.schedule import DeviceModel, schedule
from tilewarp.runtime.megakernel import MegakernelRunner

cfg = preset("tiny")
w = random_weights(cfg, 0)
sms = torch.cuda.get_device_properties(0).multi_processor_count
for tokens, kind in ((1, "decode"), (8, "verify")):
    p = lower(schedule(build_step(cfg, tokens, kind=kind, capacity=128), DeviceModel(workers=sms)))
    ref = ReferenceModel(w, capacity=128, device="cuda")
    ref.prefill([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12])
    r = MegakernelRunner(p, w, ref.cache, wait_bound_s=60.0)
    print(kind, r.decode(3, 3) if kind == "decode" else r.verify(list(range(8)))[1])
print("sanitize run done")
