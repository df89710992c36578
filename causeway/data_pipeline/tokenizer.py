"""A thin wrapper over a Hugging Face `tokenizers.Tokenizer` with causeway's reserved tokens.

Every objective needs the same handful of special ids (padding, end of document, the BERT mask,
T5's sentinels), so they are reserved here once. Any `tokenizer.json` works: reserved tokens it
lacks are appended as added tokens, which is why `vocab_size` counts added tokens.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

from tokenizers import Tokenizer as HFTokenizer
from tokenizers import decoders, models, pre_tokenizers, trainers

from causeway.data_pipeline.shards.index import read_index

PAD, EOS, BOS, UNK, MASK = "<pad>", "<eos>", "<bos>", "<unk>", "<mask>"
BASE_SPECIAL_TOKENS = (PAD, EOS, BOS, UNK, MASK)
DEFAULT_NUM_SENTINELS = 100


def sentinel_token(i: int) -> str:
    """T5's name for the i-th sentinel, so T5-style tokenizer.json files map onto ours."""
    return f"<extra_id_{i}>"


def reserved_tokens(num_sentinels: int) -> list[str]:
    """The reserved tokens in the order `train_bpe` gives them ids 0, 1, 2, ..."""
    return list(BASE_SPECIAL_TOKENS) + [sentinel_token(i) for i in range(num_sentinels)]


class Tokenizer:
    """Text <-> token ids, plus the reserved ids that objectives and packing rely on."""

    def __init__(self, hf: HFTokenizer, num_sentinels: int = DEFAULT_NUM_SENTINELS) -> None:
        if num_sentinels < 0:
            raise ValueError(f"num_sentinels must be >= 0, got {num_sentinels}")
        self._hf = hf
        self._num_sentinels = num_sentinels
        _add_missing_reserved(hf, reserved_tokens(num_sentinels))
        # A user tokenizer.json may switch on padding/truncation; documents must stay whole.
        hf.no_padding()
        hf.no_truncation()
        # Text that literally contains "<eos>" is prose, not a document boundary.
        hf.encode_special_tokens = True
        self._ids = {tok: _require_id(hf, tok) for tok in reserved_tokens(num_sentinels)}
        self._vocab_size = max(hf.get_vocab(with_added_tokens=True).values()) + 1

    @classmethod
    def from_file(cls, path: str | Path, num_sentinels: int = DEFAULT_NUM_SENTINELS) -> Tokenizer:
        """Load a Hugging Face `tokenizer.json`."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"tokenizer file not found: {path}")
        return cls(HFTokenizer.from_file(str(path)), num_sentinels=num_sentinels)

    @classmethod
    def from_dataset(
        cls, data_dir: str | Path, num_sentinels: int = DEFAULT_NUM_SENTINELS
    ) -> Tokenizer:
        """The tokenizer a prepared dataset (a local directory) was tokenized with."""
        return cls.from_file(Path(data_dir) / read_index(data_dir)["tokenizer"], num_sentinels)

    @classmethod
    def from_str(cls, json_text: str, num_sentinels: int = DEFAULT_NUM_SENTINELS) -> Tokenizer:
        """Load a tokenizer from the text of a `tokenizer.json` (e.g. fetched over http)."""
        return cls(HFTokenizer.from_str(json_text), num_sentinels=num_sentinels)

    @property
    def hf(self) -> HFTokenizer:
        """The wrapped Hugging Face tokenizer (for saving or inspection)."""
        return self._hf

    def encode(self, text: str) -> list[int]:
        """Token ids of `text`; adds no special tokens (preparation appends EOS per document)."""
        return self._hf.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        """Like `encode` for many texts, using the library's parallel batch encoding."""
        encodings = self._hf.encode_batch(list(texts), add_special_tokens=False)
        return [e.ids for e in encodings]

    def decode(self, ids: Iterable[int], skip_special_tokens: bool = False) -> str:
        """Text of `ids`; keeps special tokens by default so that nothing is silently lost."""
        return self._hf.decode([int(i) for i in ids], skip_special_tokens=skip_special_tokens)

    def save(self, path: str | Path) -> None:
        """Write the tokenizer (with any reserved tokens that were added) as tokenizer.json."""
        self._hf.save(str(path))

    @property
    def vocab_size(self) -> int:
        """One past the largest id, added tokens included: the embedding table's size."""
        return self._vocab_size

    @property
    def pad_id(self) -> int:
        return self._ids[PAD]

    @property
    def eos_id(self) -> int:
        return self._ids[EOS]

    @property
    def bos_id(self) -> int:
        return self._ids[BOS]

    @property
    def unk_id(self) -> int:
        return self._ids[UNK]

    @property
    def mask_id(self) -> int:
        return self._ids[MASK]

    @property
    def num_sentinels(self) -> int:
        return self._num_sentinels

    def sentinel_id(self, i: int) -> int:
        """Id of `<extra_id_{i}>`, the sentinel that marks the i-th corrupted span."""
        if not 0 <= i < self._num_sentinels:
            raise IndexError(f"sentinel index {i} outside [0, {self._num_sentinels})")
        return self._ids[sentinel_token(i)]

    def sentinel_ids(self) -> list[int]:
        """All sentinel ids in span order."""
        return [self.sentinel_id(i) for i in range(self._num_sentinels)]


def _add_missing_reserved(hf: HFTokenizer, tokens: list[str]) -> None:
    """Append reserved tokens the tokenizer lacks, in our canonical order."""
    vocab = hf.get_vocab(with_added_tokens=True)
    missing = [tok for tok in tokens if tok not in vocab]
    if missing:
        hf.add_special_tokens(missing)


def _require_id(hf: HFTokenizer, token: str) -> int:
    token_id = hf.token_to_id(token)
    if token_id is None:
        raise ValueError(f"tokenizer has no id for reserved token {token!r}")
    return token_id


def train_bpe(
    texts: Iterable[str],
    vocab_size: int,
    out_path: str | Path,
    num_sentinels: int = DEFAULT_NUM_SENTINELS,
) -> Tokenizer:
    """Train a byte-level BPE whose vocabulary is exactly `vocab_size` and save it to `out_path`.

    Ids: pad=0, eos=1, bos=2, unk=3, mask=4, then the sentinels, then the 256 byte symbols and
    the merges. Byte-level means no text is ever unknown. When the corpus is too small to learn
    enough merges, the rest is filled with `<unused_k>` tokens so the size is still as asked
    (model shapes are derived from it).
    """
    specials = reserved_tokens(num_sentinels)
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    minimum = len(specials) + len(alphabet)
    if vocab_size < minimum:
        raise ValueError(
            f"vocab_size {vocab_size} is too small: need at least {minimum} "
            f"({len(specials)} reserved tokens + {len(alphabet)} byte symbols)"
        )
    hf = HFTokenizer(models.BPE())
    hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    hf.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=alphabet,
        show_progress=False,
    )
    hf.train_from_iterator(texts, trainer=trainer)
    _fill_to_size(hf, vocab_size)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    hf.save(str(out_path))
    return Tokenizer(hf, num_sentinels=num_sentinels)


def _fill_to_size(hf: HFTokenizer, vocab_size: int) -> None:
    size = hf.get_vocab_size(with_added_tokens=True)
    if size < vocab_size:
        hf.add_special_tokens([f"<unused_{k}>" for k in range(vocab_size - size)])
