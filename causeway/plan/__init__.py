"""`causeway plan`: a cost model of a layout, before any GPU is involved.

`report.py` applies the trainer's own layout to the meta model under a fake process group
and builds the report; `memory.py` holds the per-rank memory rules the meta model cannot
measure (optimizer state, activations, buffers); `hardware.py` the GPUs it knows, with
sources; `step_time.py` the step time in parts and the MFU it implies; `collectives.py`
the collectives of one step.
"""
