"""Training a MiMo-shaped target and its DFlash drafter on the Python standard library.

Modules, one job each: ``data`` (stdlib files and splits), ``prompts`` (held-out function
prompts), ``tokenizer`` (byte-level BPE), ``batches`` (token streams and windows),
``presets`` (model shapes and byte budgets), ``attention`` (SDPA with sinks), ``model``
(the trainable target), ``drafter`` (the trainable drafter), ``quant`` (MXFP4 fake
quantisation), ``export`` (to and from tilewarp checkpoints), ``generate`` (batched
generation for self-distillation), ``loop`` (time budget, schedule, logging), ``state``
(resumable training state). Scripts: ``train_target``, ``train_drafter``,
``eval_acceptance``. See README.md.
"""
