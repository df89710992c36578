"""The shard format and where shards live: webdataset tar files and index.json.

`tar_writer` / `writer` (writing shards with sha256, `SplitWriter`), `index` (index.json),
`tar_reader` (reading members, verifying headers, reporting damage), `samples` (decoding
token ids, probing a dataset), `urls` (local, http(s), pipe:), `sources` (a dataset or a
mixture entry, loaded into the shard list of one split), `inspection` (`causeway data
inspect`).
"""
