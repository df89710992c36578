"""The inputs `causeway data prepare` accepts: compressed JSON lines (C4's .json.gz, the Pile's
.jsonl.zst), webdataset tars of text, directories, globs and brace ranges; and what happens
to malformed lines and members (skipped, counted, named in the log; `max_bad` makes them fatal).
"""

from __future__ import annotations

import gzip
import io
import json
import logging
import tarfile
from pathlib import Path

import pytest
import zstandard

from causeway.cli import main
from causeway.data_pipeline.prepare.patterns import expand_braces, expand_inputs
from causeway.data_pipeline.prepare.prepare import prepare_files
from causeway.data_pipeline.prepare.progress import PROGRESS_DIR
from causeway.data_pipeline.shards.index import read_index
from causeway.data_pipeline.tokenizer import Tokenizer

from .reference.reader import decode_ids, iter_samples

C4_NAME = "c4-train.{:05d}-of-01024.json.gz"


@pytest.fixture(scope="module")
def texts(builtin_corpus: list[str]) -> list[str]:
    """60 real documents (multi-line docstrings) and one that is not ASCII."""
    return [*builtin_corpus[:60], "Café, naïve — 東京 ünïcode\nsecond line"]


@pytest.fixture(scope="module")
def tokenizer_path(small_builtin: Path) -> Path:
    return small_builtin / "tokenizer.json"


def json_lines(texts: list[str], field: str = "text") -> bytes:
    rows = [{field: t, "timestamp": "2019-04-25T12:57:54Z", "url": f"https://x/{i}"}
            for i, t in enumerate(texts)]  # fmt: skip
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


def write(path: Path, data: bytes) -> Path:
    """`data` written to `path`, compressed as its name says (.gz; .zst in several frames)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.name.endswith(".gz"):
        with gzip.open(path, "wb") as f:
            f.write(data)
    elif path.name.endswith(".zst"):
        compressor = zstandard.ZstdCompressor(level=3, write_checksum=True)
        cut = data.find(b"\n", len(data) // 2) + 1  # two frames, as parallel zstd writes
        path.write_bytes(compressor.compress(data[:cut]) + compressor.compress(data[cut:]))
    else:
        path.write_bytes(data)
    return path


def write_tar(path: Path, members: list[tuple[str, bytes]]) -> Path:
    with tarfile.open(path, "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def text_tar(path: Path, texts: list[str]) -> Path:
    """A webdataset shard: odd samples as `KEY.txt`, even ones as `KEY.json` with a `text`
    field; every sample also has a `KEY.url` member, which is not read."""
    members = []
    for number, text in enumerate(texts, start=1):
        key = f"{number:06d}"
        if number % 2:
            members.append((f"{key}.txt", text.encode()))
        else:
            members.append((f"{key}.json", json.dumps({"text": text, "id": number}).encode()))
        members.append((f"{key}.url", f"https://x/{number}".encode()))
    return write_tar(path, members)


def decoded(data_dir: Path, split: str = "train") -> list[str]:
    tok = Tokenizer.from_file(data_dir / "tokenizer.json")
    samples = sorted(iter_samples(data_dir, split, seed=0), key=lambda s: int(s["__key__"]))
    return [tok.decode(decode_ids(s, "tokens")[:-1]) for s in samples]


def outputs(data_dir: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in data_dir.iterdir() if p.is_file()}


@pytest.mark.parametrize(
    "name", ["d.jsonl.gz", "d.json.gz", "d.jsonl.zst", "d.json.zst", "d.json", "d.tar"]
)
def test_every_format_gives_the_bytes_of_plain_jsonl(
    name: str, texts: list[str], tokenizer_path: Path, tmp_path: Path
) -> None:
    plain = write(tmp_path / "d.jsonl", json_lines(texts))
    reference = prepare_files([plain], tokenizer_path, tmp_path / "ref", val_fraction=0.2)
    assert decoded(reference, "train") + decoded(reference, "val") != []
    assert sorted(decoded(reference, "train") + decoded(reference, "val")) == sorted(texts)
    source = tmp_path / "in" / name
    source.parent.mkdir()
    if name.endswith(".tar"):
        text_tar(source, texts)
    else:
        write(source, json_lines(texts))
    out = prepare_files([source], tokenizer_path, tmp_path / "out", val_fraction=0.2)
    assert outputs(out) == outputs(reference)  # shards, index and tokenizer, byte for byte
    assert read_index(out)["bad_inputs"] == 0


def test_mixed_formats_across_files_match_plain_files_for_any_num_proc(
    texts: list[str], tokenizer_path: Path, tmp_path: Path
) -> None:
    parts = [texts[:15], texts[15:30], texts[30:45], texts[45:]]
    plain = [write(tmp_path / "plain" / f"p{k}.jsonl", json_lines(p)) for k, p in enumerate(parts)]
    mixed = [
        write(tmp_path / "mixed" / "a.json.gz", json_lines(parts[0])),
        write(tmp_path / "mixed" / "b.jsonl.zst", json_lines(parts[1])),
        text_tar(tmp_path / "mixed" / "c.tar", parts[2]),
        write(tmp_path / "mixed" / "d.jsonl", json_lines(parts[3])),
    ]
    args = {"val_fraction": 0.2, "shard_bytes": 24 * 1024}
    reference = prepare_files(plain, tokenizer_path, tmp_path / "ref", num_proc=1, **args)
    one = prepare_files(mixed, tokenizer_path, tmp_path / "one", num_proc=1, **args)
    two = prepare_files(mixed, tokenizer_path, tmp_path / "two", num_proc=2, **args)
    assert outputs(one) == outputs(two) == outputs(reference)
    keys = sorted(int(s["__key__"]) for split in ("train", "val")
                  for s in iter_samples(two, split, seed=0))  # fmt: skip
    assert keys == list(range(len(texts)))


def test_brace_range_glob_and_directory_expand_in_order(tmp_path: Path) -> None:
    for number in (0, 1, 2, 10):
        write(tmp_path / "c4" / C4_NAME.format(number), b"")
    (tmp_path / "c4" / "README.md").write_text("not an input")
    names = lambda paths: [p.relative_to(tmp_path).as_posix() for p in paths]  # noqa: E731
    braces = str(tmp_path / "c4" / "c4-train.{00000..00002}-of-01024.json.gz")
    assert names(expand_inputs([braces])) == [f"c4/{C4_NAME.format(n)}" for n in (0, 1, 2)]
    listed = str(tmp_path / "c4" / "c4-train.{00010,00001}-of-01024.json.gz")
    assert names(expand_inputs([listed])) == [f"c4/{C4_NAME.format(n)}" for n in (10, 1)]
    glob = str(tmp_path / "c4" / "*.json.gz")
    assert names(expand_inputs([glob])) == [f"c4/{C4_NAME.format(n)}" for n in (0, 1, 2, 10)]

    for name in ["b/2.txt", "b/10.jsonl.zst", "a.jsonl", "b/1.tar", "c.csv", ".hidden.jsonl",
                 ".cache/x.jsonl", "b/sub/z.json"]:  # fmt: skip
        write(tmp_path / "dir" / name, b"")
    expected = [
        "dir/a.jsonl",
        "dir/b/1.tar",
        "dir/b/10.jsonl.zst",
        "dir/b/2.txt",
        "dir/b/sub/z.json",
    ]
    assert names(expand_inputs([tmp_path / "dir"])) == expected
    # order of the inputs is kept, each expanded in place; a plain file is taken as it is
    plain = tmp_path / "dir" / "a.jsonl"
    assert names(expand_inputs([braces, plain])) == names(expand_inputs([braces])) + ["dir/a.jsonl"]

    with pytest.raises(FileNotFoundError, match=r"no input file matches .*\*\.jsonl\.gz"):
        expand_inputs([tmp_path / "c4" / "*.jsonl.gz"])
    missing = str(tmp_path / "c4" / "c4-train.{00000..00003}-of-01024.json.gz")
    with pytest.raises(FileNotFoundError, match=r"c4-train\.00003-of-01024\.json\.gz \(from"):
        expand_inputs([missing])
    with pytest.raises(FileNotFoundError, match="input file not found: .*nope.jsonl"):
        expand_inputs([tmp_path / "nope.jsonl"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="empty: a directory with no input files"):
        expand_inputs([tmp_path / "empty"])


def test_expand_braces_follows_the_shell() -> None:
    assert expand_braces("a{b,c}d") == ["abd", "acd"]
    assert expand_braces("{8..10}") == ["8", "9", "10"]
    assert expand_braces("{08..10}") == ["08", "09", "10"]
    assert expand_braces("x{00000..01023}")[1022:] == ["x01022", "x01023"]
    assert expand_braces("{3..1}") == ["3", "2", "1"]
    assert expand_braces("{0..9..4}") == ["0", "4", "8"]
    assert expand_braces("{a..c}") == ["a", "b", "c"]
    assert expand_braces("{a,b}{1..2}") == ["a1", "a2", "b1", "b2"]
    assert expand_braces("p{a,{b,c}}q") == ["paq", "pbq", "pcq"]
    assert expand_braces("{x}{}{y,z") == ["{x}{}{y,z"]  # nothing to expand: kept as it is
    assert expand_braces("{x}{y,z}") == ["{x}y", "{x}z"]


def test_prepare_reads_a_brace_range_in_its_order(
    texts: list[str], tokenizer_path: Path, tmp_path: Path
) -> None:
    for number in range(3):
        write(tmp_path / C4_NAME.format(number), json_lines(texts[number * 10 : number * 10 + 10]))
    pattern = str(tmp_path / "c4-train.{00002,{00000..00001}}-of-01024.json.gz")
    out = prepare_files([pattern], tokenizer_path, tmp_path / "out")
    assert decoded(out) == texts[20:30] + texts[:20]


BAD_LINES = [
    b'{"text": "fine"}',
    b"{not json",
    b'{"txt": "typo"}',
    b'{"text": 5}',
    b'{"text": "caf\xe9"}',  # latin-1, not UTF-8
    b'["text"]',
    b"",
    b'{"text": "also fine"}',
]


def bad_jsonl(path: Path) -> Path:
    return write(path, b"\n".join(BAD_LINES) + b"\n")


def bad_tar(path: Path) -> Path:
    return write_tar(path, [
        ("000001.txt", b"good one"),
        ("000002.json", json.dumps({"body": "no text field"}).encode()),
        ("000003.txt", b"\xff\xfe broken"),
        ("000004.json", b"{broken"),
        ("000005.url", b"https://only-a-url"),
        ("000006.json", json.dumps({"text": "good two"}).encode()),
    ])  # fmt: skip


@pytest.mark.parametrize("num_files", [1, 2])  # one unit logs, or the counting pass does
def test_bad_lines_and_members_are_skipped_counted_and_named(
    num_files: int, tokenizer_path: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    inputs = [bad_jsonl(tmp_path / "bad.jsonl.gz"), bad_tar(tmp_path / "bad.tar")][:num_files]
    with caplog.at_level(logging.WARNING, logger="causeway.data"):
        out = prepare_files(inputs, tokenizer_path, tmp_path / "out", max_bad=None, num_proc=1)
    expected = ["fine", "also fine"] + (["good one", "good two"] if num_files == 2 else [])
    assert decoded(out) == expected
    assert read_index(out)["bad_inputs"] == 5 + (4 if num_files == 2 else 0)
    log = caplog.text
    reasons = ["invalid JSON", "no field 'text'", "field 'text' is int", "not valid UTF-8",
               "expected a JSON object, got list"]  # fmt: skip
    for line, reason in enumerate(reasons, start=2):
        assert f"bad.jsonl.gz:{line}: {reason}" in log
    assert "bad.jsonl.gz:1:" not in log and "bad.jsonl.gz:7:" not in log
    if num_files == 2:
        assert "bad.tar:000002.json: no field 'text'" in log
        assert "bad.tar:000003.txt: not valid UTF-8" in log
        assert "bad.tar:000004.json: invalid JSON" in log
        assert "bad.tar:000005: sample has no txt or json member" in log
    assert f"skipped {read_index(out)['bad_inputs']} bad input records" in log
    assert (
        len([r for r in caplog.records if "skipping bad input" in r.getMessage()])
        == (read_index(out)["bad_inputs"])
    )  # each logged once, by one of the two passes


def test_max_bad_fails_past_the_limit_naming_the_input(
    tokenizer_path: Path, tmp_path: Path
) -> None:
    source = bad_jsonl(tmp_path / "bad.jsonl.zst")
    with pytest.raises(ValueError, match=r"bad\.jsonl\.zst:2: invalid JSON .*allows 0"):
        prepare_files([source], tokenizer_path, tmp_path / "a", max_bad=0)
    with pytest.raises(ValueError, match=r"bad\.jsonl\.zst:6: expected a JSON object"):
        prepare_files([source], tokenizer_path, tmp_path / "b", max_bad=4)
    assert not (tmp_path / "b" / "index.json").exists()
    out = prepare_files([source], tokenizer_path, tmp_path / "c", max_bad=5)
    assert read_index(out)["bad_inputs"] == 5
    with pytest.raises(ValueError, match="max_bad"):
        prepare_files([source], tokenizer_path, tmp_path / "d", max_bad=-1)


def test_max_bad_counts_over_all_inputs_before_tokenizing(
    texts: list[str], tokenizer_path: Path, tmp_path: Path
) -> None:
    first = write(tmp_path / "a.jsonl.gz", json_lines(texts) + b"{oops\n")
    second = bad_tar(tmp_path / "b.tar")
    out = tmp_path / "out"
    with pytest.raises(ValueError, match=r"b\.tar:000002\.json: no field 'text'.*allows 1"):
        prepare_files([first, second], tokenizer_path, out, max_bad=1, docs_per_shard=5)
    assert not list(out.glob("*.tar"))  # the counting pass failed: nothing was tokenized
    prepare_files([first, second], tokenizer_path, out, max_bad=None, docs_per_shard=5)
    assert read_index(out)["bad_inputs"] == 5
    # the same inputs again, now strict: the cached counts hold 5 bad records, so it counts
    # again and names the first
    with pytest.raises(ValueError, match=r"a\.jsonl\.gz:62: invalid JSON"):
        prepare_files([first, second], tokenizer_path, out, max_bad=0, docs_per_shard=5)


def test_resumed_preparation_with_bad_inputs_gives_the_same_bytes(
    texts: list[str], tokenizer_path: Path, tmp_path: Path
) -> None:
    inputs = [bad_jsonl(tmp_path / "a.jsonl.gz"),
              write(tmp_path / "b.json.zst", json_lines(texts) + b"[]\n"),
              bad_tar(tmp_path / "c.tar")]  # fmt: skip
    args = {"max_bad": None, "docs_per_shard": 10, "val_fraction": 0.1}
    reference = outputs(prepare_files(inputs, tokenizer_path, tmp_path / "ref", **args))
    out = prepare_files(inputs, tokenizer_path, tmp_path / "out", num_proc=2, **args)
    progress = out / PROGRESS_DIR / "unit-00001.json"  # b.json.zst: as if interrupted
    record = json.loads(progress.read_text())
    assert record["bad"] == 1 and record["first_bad"].endswith("got list")
    lost = record["splits"]["train"][1:]
    assert lost
    record["splits"]["train"] = record["splits"]["train"][:1]
    record["done"] = False
    progress.write_text(json.dumps(record))
    for shard in lost:
        (out / shard["name"]).unlink()
    (out / "index.json").unlink()
    prepare_files(inputs, tokenizer_path, out, num_proc=1, **args)
    assert outputs(out) == reference
    assert read_index(out)["bad_inputs"] == 5 + 1 + 4


def test_every_record_bad_is_an_error_not_an_empty_dataset(
    texts: list[str], tokenizer_path: Path, tmp_path: Path
) -> None:
    inputs = [write(tmp_path / f"{k}.json.gz", json_lines(texts[:3], "content")) for k in "ab"]
    for files in (inputs[:1], inputs):  # one unit, or the counting pass, finds out
        with pytest.raises(
            ValueError, match=r"all \d+ records .* were bad .*a\.json\.gz:1: no field"
        ):
            prepare_files(files, tokenizer_path, tmp_path / "o", max_bad=None)
        assert not (tmp_path / "o" / "index.json").exists()
    out = prepare_files(inputs, tokenizer_path, tmp_path / "o", text_field="content")
    assert decoded(out) == texts[:3] * 2


def test_broken_files_are_errors_naming_them(
    texts: list[str], tokenizer_path: Path, tmp_path: Path
) -> None:
    whole = gzip.compress(json_lines(texts))
    (tmp_path / "cut.json.gz").write_bytes(whole[: len(whole) // 2])
    whole = zstandard.ZstdCompressor().compress(json_lines(texts))
    (tmp_path / "cut.jsonl.zst").write_bytes(whole[: len(whole) // 2])
    (tmp_path / "junk.jsonl.zst").write_bytes(b"\x28\xb5\x2f\xfd" + b"\x00junk" * 50)
    (tmp_path / "junk.tar").write_bytes(b"not a tar at all" * 100)
    write(tmp_path / "array.json", json.dumps([{"text": t} for t in texts[:3]], indent=1).encode())
    for name in ["cut.json.gz", "cut.jsonl.zst", "junk.jsonl.zst", "junk.tar"]:
        with pytest.raises(ValueError, match=rf"{name}: truncated or corrupt file"):
            prepare_files([tmp_path / name], tokenizer_path, tmp_path / "o", max_bad=None)
    with pytest.raises(ValueError, match=r"array\.json: one JSON document spread over lines"):
        prepare_files([tmp_path / "array.json"], tokenizer_path, tmp_path / "o", max_bad=None)
    with pytest.raises(ValueError, match=r"x\.txt\.bz2: unsupported file type '\.bz2'"):
        prepare_files([write(tmp_path / "x.txt.bz2", b"")], tokenizer_path, tmp_path / "o")


def test_pairs_from_compressed_lines_and_tar_json(tokenizer_path: Path, tmp_path: Path) -> None:
    rows = [{"inputs": "Question: 2+2?", "targets": "4"}, {"inputs": "Say hi", "targets": "hi"}]
    data = "".join(json.dumps(r) + "\n" for r in rows).encode()
    lines = write(tmp_path / "mtf.jsonl.zst", data)
    tar = write_tar(tmp_path / "mtf.tar", [("a.txt", b"no pairs in a txt member")] + [
        (f"{k}.json", json.dumps(r).encode()) for k, r in enumerate(rows)
    ])  # fmt: skip
    pairs = ("inputs", "targets")
    a = prepare_files([lines], tokenizer_path, tmp_path / "a", pair_fields=pairs)
    b = prepare_files([tar], tokenizer_path, tmp_path / "b", pair_fields=pairs, max_bad=None)
    assert read_index(b)["bad_inputs"] == 1  # the txt-only sample
    assert outputs(a) == {**outputs(b), "index.json": outputs(a)["index.json"]}
    assert read_index(a)["splits"] == read_index(b)["splits"]


def test_cli_prepares_c4_json_gz(
    texts: list[str], tokenizer_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    c4 = tmp_path / "c4"
    for number in range(2):
        write(c4 / C4_NAME.format(number), json_lines(texts[number * 30 : number * 30 + 30]))
    write(c4 / C4_NAME.format(2), json_lines(texts[60:]) + b'{"text": null}\n')
    common = ["--tokenizer", str(tokenizer_path), "--num-proc", "2"]
    pattern = str(c4 / "c4-train.{00000..00002}-of-01024.json.gz")
    assert main(["data", "prepare", "--input", pattern, "--out", str(tmp_path / "o"), *common]) == 0
    captured = capsys.readouterr()
    assert "skipped 1 bad input records" in captured.err and "prepared" in captured.out
    assert decoded(tmp_path / "o") == texts
    single = str(c4 / C4_NAME.format(0))
    assert main(["data", "prepare", "--input", single, "--out", str(tmp_path / "s"), *common]) == 0
    assert decoded(tmp_path / "s") == texts[:30]
    strict = ["data", "prepare", "--input", str(c4), "--out", str(tmp_path / "x"), "--max-bad", "0"]
    assert main([*strict, *common]) == 2
    assert "c4-train.00002-of-01024.json.gz:2: field 'text' is NoneType" in capsys.readouterr().err
    assert main(["data", "prepare", "--input", str(c4 / "*.jsonl"), "--out", str(tmp_path / "y"),
                 *common]) == 2  # fmt: skip
    assert "no input file matches" in capsys.readouterr().err
