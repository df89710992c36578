"""Reading: prepared shards -> packed batches, deterministic, resumable, read by share.

`DataStream` (stream.py) is the entry point. Inside: `dealing` (each epoch's shards dealt to the
readers), `walk` (one reader's walk through one source's shards: documents, bad data),
`reader` (one reader's pipeline: documents -> objective -> packed rows), `workers` (a rank's
readers in this process or in worker processes), `processes` (those processes, watched so that
a death is seen and restarted) and `state` (saving, merging and redistributing the position).
"""

from causeway.data_pipeline.stream.processes import LoaderWorkerDied
from causeway.data_pipeline.stream.state import merge_states
from causeway.data_pipeline.stream.stream import DataStream, default_readers

__all__ = ["DataStream", "LoaderWorkerDied", "default_readers", "merge_states"]
