"""`causeway plan`: a cost model of a layout, before any GPU is involved.

`report.py` applies the trainer's own layout to the meta model under a fake process group
and builds the report; `memory.py` holds the per-rank memory rules the meta model cannot
measure (optimizer state, activations, buffers); `gpus.py` the GPUs it knows and the
step-time / MFU estimate.
"""
