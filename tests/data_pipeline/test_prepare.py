from __future__ import annotations

import json
import shutil
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from webdataset.tariterators import tarfile_samples

from causeway.data_pipeline.prepare.prepare import (
    LOCK_NAME,
    ensure_builtin,
    exclusive_lock,
    prepare_builtin,
    prepare_files,
)
from causeway.data_pipeline.tokenizer import Tokenizer

from .reference.reader import (
    decode_ids,
    iter_documents,
    iter_pairs,
    iter_samples,
    read_index,
)


def _keys(data_dir: Path, split: str) -> list[int]:
    return [int(s["__key__"]) for s in iter_samples(data_dir, split, seed=0)]


def test_builtin_index_matches_what_the_reader_yields(
    small_builtin: Path, builtin_params: dict
) -> None:
    index = read_index(small_builtin)
    assert index["vocab_size"] == builtin_params["vocab_size"] and index["dtype"] == "uint16"
    assert index["tokenizer"] == "tokenizer.json" and index["format"] == "tokens"
    assert set(index["splits"]) == {"train", "val"}
    for split, entry in index["splits"].items():
        docs = list(iter_documents(small_builtin, split, seed=0))
        assert len(docs) == entry["documents"] > 0
        assert sum(len(d) for d in docs) == entry["tokens"]
        assert entry["documents"] == sum(s["documents"] for s in entry["shards"])
        for number, shard in enumerate(entry["shards"]):
            assert shard["name"] == f"{split}-{number:06d}.tar"
            samples = list(tarfile_samples([{"url": str(small_builtin / shard["name"])}]))
            assert len(samples) == shard["documents"] <= builtin_params["docs_per_shard"]
            assert sum(len(decode_ids(s, "tokens")) for s in samples) == shard["tokens"]
            assert all(set(s) == {"__key__", "__url__", "tokens.u16"} for s in samples)


def test_builtin_splits_are_disjoint_and_cover_the_corpus(
    small_builtin: Path, builtin_corpus: list[str]
) -> None:
    train, val = _keys(small_builtin, "train"), _keys(small_builtin, "val")
    assert not set(train) & set(val)
    assert sorted(train + val) == list(range(len(builtin_corpus)))
    assert 0.005 < len(val) / (len(train) + len(val)) < 0.04  # val_fraction 0.02


def test_builtin_documents_decode_back_to_the_corpus(
    small_builtin: Path, tokenizer: Tokenizer, builtin_corpus: list[str]
) -> None:
    for sample in list(iter_samples(small_builtin, "val", seed=0))[:20]:
        ids = decode_ids(sample, "tokens")
        assert ids[-1] == tokenizer.eos_id and tokenizer.eos_id not in ids[:-1]
        assert tokenizer.decode(ids[:-1]) == builtin_corpus[int(sample["__key__"])]


def test_ensure_builtin_keeps_a_complete_dataset(small_builtin: Path) -> None:
    before = {p.name: p.stat().st_mtime_ns for p in small_builtin.iterdir()}
    assert ensure_builtin(small_builtin) == small_builtin
    assert {p.name: p.stat().st_mtime_ns for p in small_builtin.iterdir()} == before


def _write_jsonl(path: Path, rows: list[object]) -> Path:
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    return path


def _texts(data_dir: Path, split: str, tok: Tokenizer) -> list[str]:
    samples = sorted(iter_samples(data_dir, split, seed=0), key=lambda s: s["__key__"])
    return [tok.decode(decode_ids(s, "tokens")[:-1]) for s in samples]


def test_prepare_files_jsonl_with_val_files(tmp_path: Path, small_builtin: Path) -> None:
    rows = [{"body": "first doc", "id": 1}, {"body": ""}, {"body": "two"}]  # empty is skipped
    train = _write_jsonl(tmp_path / "a.jsonl", rows)
    val = _write_jsonl(tmp_path / "v.jsonl", [{"body": "held out"}])
    out = prepare_files(
        [train], small_builtin / "tokenizer.json", tmp_path / "out", "body", val_files=[val]
    )
    tok = Tokenizer.from_file(out / "tokenizer.json")
    assert _texts(out, "train", tok) == ["first doc", "two"]
    assert _texts(out, "val", tok) == ["held out"]
    assert _keys(out, "val") == [2]
    assert read_index(out)["splits"]["train"]["documents"] == 2


def test_prepare_files_txt_splits_on_blank_lines(tmp_path: Path, small_builtin: Path) -> None:
    source = tmp_path / "book.txt"
    source.write_text("Para one,\nline two.\n\n\n  \nPara two.\n\nPara three.", encoding="utf-8")
    out = prepare_files([source], small_builtin / "tokenizer.json", tmp_path / "out", seed=3)
    tok = Tokenizer.from_file(out / "tokenizer.json")
    assert _texts(out, "train", tok) == ["Para one,\nline two.", "Para two.", "Para three."]


def test_prepare_files_val_fraction_is_seeded(tmp_path: Path, small_builtin: Path) -> None:
    rows = [{"text": f"document number {i}"} for i in range(200)]
    source = _write_jsonl(tmp_path / "many.jsonl", rows)
    tokenizer_path = small_builtin / "tokenizer.json"
    a = prepare_files([source], tokenizer_path, tmp_path / "a", val_fraction=0.25, seed=1)
    b = prepare_files([source], tokenizer_path, tmp_path / "b", val_fraction=0.25, seed=1)
    c = prepare_files([source], tokenizer_path, tmp_path / "c", val_fraction=0.25, seed=2)
    assert _keys(a, "val") == _keys(b, "val") != _keys(c, "val")
    assert 25 < len(_keys(a, "val")) < 75
    assert sorted(_keys(a, "train") + _keys(a, "val")) == list(range(200))


def test_prepare_files_pairs(tmp_path: Path, small_builtin: Path) -> None:
    rows = [{"inputs": "Question: 2+2?", "targets": "4"}, {"inputs": "Say hi", "targets": "hi"}]
    source = _write_jsonl(tmp_path / "mtf.jsonl", rows)
    out = prepare_files(
        [source],
        small_builtin / "tokenizer.json",
        tmp_path / "out",
        pair_fields=("inputs", "targets"),
    )
    tok = Tokenizer.from_file(out / "tokenizer.json")
    assert read_index(out)["format"] == "pairs"
    pairs = list(iter_pairs(out, "train", seed=0))
    assert [(tok.decode(i), tok.decode(t[:-1])) for i, t in pairs] == [
        ("Question: 2+2?", "4"),
        ("Say hi", "hi"),
    ]
    assert all(t[-1] == tok.eos_id for _, t in pairs)
    docs = list(iter_documents(out, "train", seed=0))
    assert [d.tolist() for d in docs] == [np.concatenate(p).tolist() for p in pairs]


def test_prepare_files_parquet(tmp_path: Path, small_builtin: Path) -> None:
    pa = pytest.importorskip("pyarrow", reason="pyarrow is optional (extra 'parquet')")
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"content": ["alpha beta", "gamma"]}), tmp_path / "d.parquet")
    out = prepare_files(
        [tmp_path / "d.parquet"],
        small_builtin / "tokenizer.json",
        tmp_path / "o",
        text_field="content",
    )
    tok = Tokenizer.from_file(out / "tokenizer.json")
    assert _texts(out, "train", tok) == ["alpha beta", "gamma"]


def test_parquet_without_pyarrow_says_how_to_install(
    tmp_path: Path, small_builtin: Path, monkeypatch
) -> None:
    # pyarrow is installed with the dev extra: a None entry makes its import fail as if not.
    for name in ("pyarrow", "pyarrow.parquet"):
        monkeypatch.setitem(sys.modules, name, None)
    (tmp_path / "d.parquet").write_bytes(b"PAR1")
    with pytest.raises(ImportError, match=r"d\.parquet.*pip install pyarrow"):
        prepare_files([tmp_path / "d.parquet"], small_builtin / "tokenizer.json", tmp_path / "o")


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('{"txt": "typo"}', r"bad\.jsonl:3: no field 'text' \(fields: \['txt'\]\)"),
        ('{"text": 5}', r"bad\.jsonl:3: field 'text' is int, expected a string"),
        ("{not json", r"bad\.jsonl:3: invalid JSON"),
        ('["text"]', r"bad\.jsonl:3: expected a JSON object"),
    ],
)
def test_bad_jsonl_errors_name_file_and_line(
    tmp_path: Path, small_builtin: Path, line: str, message: str
) -> None:
    source = tmp_path / "bad.jsonl"
    source.write_text('{"text": "fine"}\n\n' + line + "\n", encoding="utf-8")
    with pytest.raises(ValueError, match=message):
        prepare_files([source], small_builtin / "tokenizer.json", tmp_path / "out", max_bad=0)


def test_failed_prepare_leaves_no_index(tmp_path: Path, small_builtin: Path) -> None:
    out = tmp_path / "out"
    good = _write_jsonl(tmp_path / "good.jsonl", [{"text": "ok"}])
    prepare_files([good], small_builtin / "tokenizer.json", out)
    assert (out / "index.json").is_file()
    rows = [{"text": f"doc {i}"} for i in range(2500)] + [{"oops": 1}]
    bad = _write_jsonl(tmp_path / "bad.jsonl", rows)
    with pytest.raises(ValueError, match="bad.jsonl:2501"):
        prepare_files([bad], small_builtin / "tokenizer.json", out, docs_per_shard=1000, max_bad=0)
    assert not (out / "index.json").exists()
    with pytest.raises(FileNotFoundError, match="not a prepared dataset"):
        read_index(out)


def test_missing_input_file_is_named_before_anything_is_written(
    tmp_path: Path, small_builtin: Path
) -> None:
    with pytest.raises(FileNotFoundError, match="missing.jsonl"):
        prepare_files(
            [tmp_path / "missing.jsonl"], small_builtin / "tokenizer.json", tmp_path / "o"
        )
    assert not (tmp_path / "o").exists()


def test_unsupported_suffix_is_an_error(tmp_path: Path, small_builtin: Path) -> None:
    (tmp_path / "data.csv").write_text("text\nhello\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"data\.csv: unsupported file type"):
        prepare_files([tmp_path / "data.csv"], small_builtin / "tokenizer.json", tmp_path / "o")


def test_prepare_builtin_is_byte_reproducible(
    tmp_path: Path, small_builtin: Path, builtin_params: dict
) -> None:
    again = prepare_builtin(tmp_path, **builtin_params)

    def names(data_dir: Path) -> list[str]:  # not the lock file ensure_builtin leaves
        return sorted(p.name for p in data_dir.iterdir() if not p.name.startswith("."))

    assert names(small_builtin) == names(again)
    for name in names(again):
        assert (small_builtin / name).read_bytes() == (again / name).read_bytes(), name


def test_ensure_builtin_waits_for_a_concurrent_preparation(
    tmp_path: Path, small_builtin: Path
) -> None:
    """While another process holds the lock, ensure_builtin waits; once that process has
    finished the dataset, ensure_builtin returns it untouched instead of building again."""
    target = tmp_path / "shared"
    target.mkdir()
    result: list[Path] = []
    with exclusive_lock(target / LOCK_NAME):
        waiter = threading.Thread(target=lambda: result.append(ensure_builtin(target)))
        waiter.start()
        waiter.join(timeout=0.5)
        assert waiter.is_alive() and not result  # blocked on the lock
        shutil.copytree(small_builtin, target, dirs_exist_ok=True)  # the "other" builder
        before = {p.name: p.stat().st_mtime_ns for p in target.iterdir()}
    waiter.join(timeout=30)
    assert result == [target]
    assert {p.name: p.stat().st_mtime_ns for p in target.iterdir()} == before
