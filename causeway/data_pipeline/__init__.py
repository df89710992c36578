"""Data for causeway: text -> token shards -> documents -> objective examples -> packed batches.

Preparation: `prepare` (builtin corpus and files; parallel, resumable), `prepare_units` and
`prepare_progress` (one input file per process; skipping finished shards), `shards` and
`tar_writer` (webdataset tar shards with sha256), `index` (index.json), `tokenizer`, `corpus`,
`text_sources`.

Reading: `stream.DataStream` (the resumable, rank- and worker-aware batch stream; see
docs/data.md), built from `sources` (datasets and mixtures), `urls` (local, pipe:, http),
`dealing` (shards to readers per epoch), `doc_reader` and `tar_reader` (documents, bad data),
`objective_rules` (the objectives' lengths and parameters), `block_objectives`/`span_block`
(objectives on whole blocks), `row_packer` (packing), `lane`
(one reader's pipeline), `stream_state` (state, merging, resizing), `stream_iteration`
(in-process or DataLoader workers) and `inspection` (`causeway data inspect`).

The per-document specification the vectorised path is tested against lives in
tests/data_pipeline/reference/. Nothing is imported here, so
`import causeway.data_pipeline.tokenizer` does not pull in torch.
"""
