"""Preparation: text files -> tokenized webdataset tar shards + index.json.

`prepare` (prepare_files, prepare_builtin, ensure_builtin: parallel, resumable), `inputs`
(the input formats: jsonl / json / txt, gzip or zstandard compressed, parquet, webdataset
tar; bad records counted), `patterns` (directories, globs, brace ranges), `units` (one input
file per process), `progress` (finished shards kept across interruptions), `corpus` (the
builtin corpus).
"""
