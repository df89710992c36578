"""Data for causeway: text -> token shards -> documents -> objective examples -> packed batches.

Modules: `tokenizer` (HF tokenizer + reserved ids, BPE training), `corpus` (builtin stdlib
docstring corpus), `prepare` (writing shards and index.json), `reader` (streaming documents),
`objectives` (full_lm, prefix_lm, span_corruption, masked_lm, mtf), `packing` (rows, segment
ids, positions) and `loader` (all of it chained into a batch iterator). Nothing is imported
here, so `import causeway.data_pipeline.tokenizer` does not pull in torch.
"""
