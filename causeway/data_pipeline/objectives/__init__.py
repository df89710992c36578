"""Objectives on whole blocks of documents: full LM, prefix LM, span corruption, masked LM, mtf.

`rules` (length rules and parameter checks, torch-free, shared with the config checks),
`objectives` (`make_block_objective`: a block of documents -> examples), `span_corruption`
(the vectorised T5 noise), `examples` (`DocBlock`, `Examples`: the currency between reading,
objectives and packing), `ops` (index arithmetic over runs), `hash_random` (counter-based
randomness keyed by each document's identity).
"""
