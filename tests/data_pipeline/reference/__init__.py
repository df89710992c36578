"""The per-document specification the package's block path is tested against.

Plain, one-document-at-a-time versions of what `causeway.data_pipeline` does on whole blocks:
`reader` (a simple sequential shard reader), `objectives` and `span_corruption` (each
objective applied to one document, seeded by an `np.random.Generator`), `examples` (the two
example shapes), `packing` (greedy packing into rows and batches) and `loader` (all of it in
one call). Lengths and parameters come from the package's `objective_rules`, so only the
transforms are specified here. Nothing in the package imports this.
"""
