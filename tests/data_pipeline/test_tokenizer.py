from __future__ import annotations

from pathlib import Path

import pytest
from tokenizers import Tokenizer as HFTokenizer
from tokenizers import models, pre_tokenizers

from causeway.data_pipeline.tokenizer import Tokenizer, train_bpe

TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "  Leading spaces, tabs\tand\nnewlines survive.\n",
    "naïve café — 東京 🚀 and ünïcödé",
    "",
]


def test_reserved_ids_come_first_then_sentinels(tokenizer: Tokenizer) -> None:
    ids = (tokenizer.pad_id, tokenizer.eos_id, tokenizer.bos_id, tokenizer.unk_id)
    assert ids == (0, 1, 2, 3)
    assert tokenizer.mask_id == 4
    assert tokenizer.num_sentinels == 100
    assert [tokenizer.sentinel_id(i) for i in (0, 1, 99)] == [5, 6, 104]
    assert tokenizer.hf.id_to_token(tokenizer.sentinel_id(7)) == "<extra_id_7>"
    assert tokenizer.sentinel_ids() == list(range(5, 105))


def test_trained_vocab_has_exactly_the_requested_size(
    tokenizer: Tokenizer, builtin_params: dict
) -> None:
    assert tokenizer.vocab_size == builtin_params["vocab_size"]
    assert tokenizer.hf.get_vocab_size(with_added_tokens=True) == builtin_params["vocab_size"]


def test_tiny_corpus_is_filled_up_to_the_requested_size(tmp_path: Path) -> None:
    tok = train_bpe(["ab ab ab"] * 3, 400, tmp_path / "tokenizer.json", num_sentinels=4)
    assert tok.vocab_size == 400
    reloaded = Tokenizer.from_file(tmp_path / "tokenizer.json", num_sentinels=4)
    assert reloaded.vocab_size == 400
    assert reloaded.sentinel_id(3) == tok.sentinel_id(3) == 8


def test_too_small_vocab_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="too small"):
        train_bpe(["abc"], 300, tmp_path / "tokenizer.json")


@pytest.mark.parametrize("text", TEXTS)
def test_encode_decode_round_trip(tokenizer: Tokenizer, text: str) -> None:
    assert tokenizer.decode(tokenizer.encode(text)) == text


def test_encode_adds_no_special_tokens_even_for_literal_special_text(
    tokenizer: Tokenizer,
) -> None:
    text = "a <eos> b <pad> <extra_id_0>"
    ids = tokenizer.encode(text)
    reserved = {tokenizer.eos_id, tokenizer.pad_id, tokenizer.sentinel_id(0), tokenizer.bos_id}
    assert not reserved & set(ids)
    assert tokenizer.decode(ids) == text


def test_encode_batch_matches_encode(tokenizer: Tokenizer) -> None:
    assert tokenizer.encode_batch(TEXTS) == [tokenizer.encode(t) for t in TEXTS]


def test_reloaded_tokenizer_encodes_identically(tokenizer: Tokenizer, small_builtin: Path) -> None:
    again = Tokenizer.from_file(small_builtin / "tokenizer.json")
    assert again.encode_batch(TEXTS) == tokenizer.encode_batch(TEXTS)


@pytest.mark.parametrize("index", [-1, 100])
def test_sentinel_outside_range_raises(tokenizer: Tokenizer, index: int) -> None:
    with pytest.raises(IndexError):
        tokenizer.sentinel_id(index)


def test_foreign_tokenizer_gets_missing_reserved_tokens(tmp_path: Path) -> None:
    vocab = {"<pad>": 0, "[UNK]": 1, "hello": 2, "world": 3}
    hf = HFTokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    hf.pre_tokenizer = pre_tokenizers.Whitespace()
    hf.enable_padding(pad_id=0, pad_token="<pad>", length=8)
    hf.save(str(tmp_path / "tokenizer.json"))

    tok = Tokenizer.from_file(tmp_path / "tokenizer.json", num_sentinels=3)

    assert tok.pad_id == 0  # kept where the user had it
    added = [tok.eos_id, tok.bos_id, tok.unk_id, tok.mask_id] + tok.sentinel_ids()
    assert added == list(range(4, 4 + 4 + 3))
    assert tok.vocab_size == 11
    assert tok.encode_batch(["hello", "hello world"]) == [[2], [2, 3]]  # padding switched off
    with pytest.raises(IndexError):
        tok.sentinel_id(3)


def test_missing_tokenizer_file_names_the_path(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nope.json"):
        Tokenizer.from_file(tmp_path / "nope.json")
