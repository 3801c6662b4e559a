"""Text: parallel corpora for seq2seq/transformer and token files for gpt.

Parallel text (IWSLT15 as the TF NMT tutorial ships it, WMT likewise): `DIR/train.SRC`,
`DIR/train.TGT` (one sentence per line, already tokenized: words split on whitespace) and a
vocabulary per side, `DIR/vocab.SRC`, `DIR/vocab.TGT` (one word per line, most frequent first;
leading `<unk>`, `<s>`, `</s>` lines are the special tokens and are skipped). The source is the
language whose name sorts first; `--data DIR/train.XX` names it. A flavor's model has a fixed
vocabulary size: words past it (and words not in the file) become <unk>. Sentences are cut at
the flavor's `max_len` tokens. Batches: pools of 32 batches' worth of pairs are sorted by length
and cut into batches, fixed pairs per batch (seq2seq) or a padded-token budget (transformer, the
fairseq `--max-tokens` rule), then shuffled: the bucketing the synthetic batches imitate.

Tokens for gpt: nanoGPT's `train.bin` (uint16 token ids, native byte order), or a folder with
it; or raw text, a folder with `train.txt` and a Hugging Face `tokenizer.json` (read by the
`tokenizers` library, which tokenizes the text when the dataset opens, in memory: for a large
corpus write a train.bin once instead). Each sample is a random window of `block_size + 1` tokens.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tbd.data.base import Dataset, bad_data, existing_dir, pad_stack
from tbd.errors import UsageError
from tbd.workloads.text_data import BOS, EOS, FIRST_WORD, PAD, UNK

SPECIALS = ("<unk>", "<s>", "</s>", "<pad>", "<blank>")
POOL_BATCHES = 32
LAYOUT = "parallel text (DIR/train.SRC, DIR/train.TGT, DIR/vocab.SRC, DIR/vocab.TGT)"


def read_vocab(path: Path, size: int) -> dict[str, int]:
    """word -> id for the first `size - FIRST_WORD` words of a vocabulary file."""
    words = [w for w in (line.strip() for line in path.read_text(encoding="utf-8", errors="replace").splitlines()) if w and w not in SPECIALS]
    if not words:
        raise bad_data(path, "is an empty vocabulary", "give one word per line, most frequent first")
    return {w: FIRST_WORD + i for i, w in enumerate(words[: max(0, size - FIRST_WORD)])}


def pair_files(path: str | Path, workload: str) -> tuple[Path, str, str]:
    """(folder, source language, target language) of a parallel corpus."""
    p = Path(path).expanduser()
    first = None
    if p.is_file() and p.name.startswith("train."):
        first, p = p.name.split(".", 1)[1], p.parent
    root = existing_dir(p, workload, LAYOUT)
    langs = sorted(n.split(".", 1)[1] for n in os.listdir(root) if n.startswith("train.") and (root / n).is_file())
    if len(langs) != 2:
        problem = "holds no train.* files" if not langs else f"holds {len(langs)} train.* files ({', '.join('train.' + x for x in langs)})"
        raise bad_data(root, problem, f"{workload} reads {LAYOUT}: exactly two train.LANG files")
    if first is not None:
        langs = [first] + [x for x in langs if x != first]
    for lang in langs:
        if not (root / f"vocab.{lang}").is_file():
            raise bad_data(root / f"vocab.{lang}", "is missing", f"{workload} reads {LAYOUT}")
    return root, langs[0], langs[1]


class ParallelText(Dataset):
    format = "parallel_text"

    def __init__(self, path, batch_size: int, seed: int = 0, src_vocab: int = 256, tgt_vocab: int = 256, max_len: int = 50,
                 by_tokens: bool = False, workload: str = "seq2seq"):
        super().__init__(path, batch_size, seed)
        self.root, self.src_lang, self.tgt_lang = pair_files(path, workload)
        self.vocab = (read_vocab(self.root / f"vocab.{self.src_lang}", src_vocab), read_vocab(self.root / f"vocab.{self.tgt_lang}", tgt_vocab))
        sides = [self._lines(self.root / f"train.{lang}") for lang in (self.src_lang, self.tgt_lang)]
        if len(sides[0]) != len(sides[1]):
            raise bad_data(self.root / f"train.{self.tgt_lang}", f"has {len(sides[1]):,} lines but train.{self.src_lang} has {len(sides[0]):,}",
                           "the two sides of a parallel corpus need one line per sentence pair")
        keep = [i for i, (a, b) in enumerate(zip(*sides)) if a.strip() and b.strip()]
        if not keep:
            raise bad_data(self.root / f"train.{self.src_lang}", "has no non-empty sentence pair", f"{workload} reads {LAYOUT}")
        self.src = [sides[0][i] for i in keep]
        self.tgt = [sides[1][i] for i in keep]
        self.max_len, self.by_tokens = max_len, by_tokens
        # Lengths in tokens with EOS, cut at max_len: what bucketing sorts by.
        self.lengths = np.array([[min(len(a.split()) + 1, max_len), min(len(b.split()) + 1, max_len)] for a, b in zip(self.src, self.tgt)], np.int64)
        self.facts.update(samples=len(self.src), source_language=self.src_lang, target_language=self.tgt_lang,
                          mean_tokens_per_pair=float(self.lengths.sum(axis=1).mean()), vocab_words=[len(v) for v in self.vocab])
        if len(sides[0]) > len(keep):
            self.notes.append(f"{len(sides[0]) - len(keep)} pair(s) with an empty side left out")
        if by_tokens and int(self.lengths.max()) > batch_size:
            raise UsageError(f"--batch-size {batch_size} tokens is below the longest sentence ({int(self.lengths.max())} tokens); raise it")

    @staticmethod
    def _lines(path: Path) -> list[str]:
        try:
            return path.read_text(encoding="utf-8").splitlines()
        except UnicodeDecodeError as exc:
            raise bad_data(path, f"is not UTF-8 text (byte {exc.start})", "convert it to UTF-8") from None

    def __len__(self) -> int:
        return len(self.src)

    def name_of(self, index: int) -> str:
        return f"{self.root}/train.{self.src_lang}:{index + 1}"

    def _ids(self, line: str, vocab: dict[str, int]) -> np.ndarray:
        words = line.split()[: self.max_len - 1]
        return np.array([vocab.get(w, UNK) for w in words] + [EOS], np.int64)

    def load(self, index: int, rng: np.random.Generator) -> dict[str, Any]:
        return {"src": self._ids(self.src[index], self.vocab[0]), "tgt": self._ids(self.tgt[index], self.vocab[1])}

    def plan(self, epoch: int) -> list[list[int]]:
        rng = self.rng(epoch)
        order = rng.permutation(len(self))
        batches: list[list[int]] = []
        mean_pairs = self.batch_size if not self.by_tokens else max(1, self.batch_size // int(self.lengths.max(axis=1).mean()))
        pool = mean_pairs * POOL_BATCHES
        for start in range(0, len(order), pool):
            chunk = sorted(order[start : start + pool].tolist(), key=lambda i: (self.lengths[i].max(), self.lengths[i, 0]))
            batches += self._cut(chunk)
        return [batches[i] for i in rng.permutation(len(batches))]

    def _cut(self, ordered: list[int]) -> list[list[int]]:
        if not self.by_tokens:
            return [ordered[k : k + self.batch_size] for k in range(0, len(ordered) - self.batch_size + 1, self.batch_size)]
        out, current, longest = [], [], 0
        for i in ordered:
            longer = max(longest, int(self.lengths[i].max()))
            if current and (len(current) + 1) * longer > self.batch_size:
                out.append(current)
                current, longer = [], int(self.lengths[i].max())
            current.append(i)
            longest = longer
        return out + ([current] if current else [])

    def collate(self, samples: Sequence[dict[str, Any]]) -> dict[str, Any]:
        """Sorted longest source first (what packed RNNs want); decoder input is <s> y1 .. y(n-1)."""
        ordered = sorted(samples, key=lambda s: -len(s["src"]))
        src = pad_stack([s["src"] for s in ordered], PAD)
        tgt_out = pad_stack([s["tgt"] for s in ordered], PAD)
        tgt_in = np.concatenate([np.full((len(ordered), 1), BOS), tgt_out[:, :-1]], axis=1)
        tgt_in[tgt_out == PAD] = PAD
        return {"src": src, "src_lens": np.array([len(s["src"]) for s in ordered], np.int64), "tgt_in": tgt_in, "tgt_out": tgt_out,
                "tgt_lens": np.array([len(s["tgt"]) for s in ordered], np.int64)}


def token_file(path: str | Path, workload: str = "gpt") -> Path:
    p = Path(path).expanduser()
    if p.is_dir() and (p / "train.bin").is_file():
        return p / "train.bin"
    if p.is_dir() and (p / "train.txt").is_file():
        if not (p / "tokenizer.json").is_file():
            raise bad_data(p, "has train.txt but no tokenizer.json", "add the tokenizer (Hugging Face tokenizers' JSON) or a tokenized train.bin")
        return p / "train.txt"
    if p.is_file():
        return p
    if p.is_dir():
        raise bad_data(p, "has no train.bin (nor train.txt with tokenizer.json)",
                       f"{workload} reads a token file (uint16 ids, as nanoGPT's prepare.py writes it) or raw text with a tokenizer")
    raise UsageError(f"--data {path}: no such file or folder; give a .bin token file ('tbd data make {workload} --out DIR' writes one)")


class TokenFile(Dataset):
    format = "tokens"

    def __init__(self, path, batch_size: int, seed: int = 0, block_size: int = 64, vocab: int = 50304, workload: str = "gpt"):
        super().__init__(path, batch_size, seed)
        self.file = token_file(path, workload)
        self._data: np.ndarray | None = None  # opened in each loader process (a memory map does not pickle)
        self.block = block_size
        if self.file.suffix == ".txt":
            self._data = tokenize(self.file, self.file.parent / "tokenizer.json", vocab)
            self.tokens = len(self._data)
            if self.tokens < block_size + 2:
                raise bad_data(self.file, f"holds {self.tokens:,} tokens, fewer than one window of {block_size + 1}", "give more text")
            self.facts.update(tokens=self.tokens, block_size=block_size, tokenizer=str(self.file.parent / "tokenizer.json"))
            return
        size = self.file.stat().st_size
        if size % 2:
            raise bad_data(self.file, f"is {size:,} bytes, not a whole number of uint16 tokens", "give a file of uint16 token ids")
        self.tokens, self.block = size // 2, block_size
        if self.tokens < block_size + 2:
            raise bad_data(self.file, f"holds {self.tokens:,} tokens, fewer than one window of {block_size + 1}", "give more text")
        head = np.fromfile(self.file, np.uint16, count=min(self.tokens, 1 << 20))
        if int(head.max()) >= vocab:
            raise bad_data(self.file, f"has token id {int(head.max())}, beyond the flavor's vocabulary of {vocab}",
                           "use a flavor with a larger vocabulary (paper: GPT-2's 50,257) or tokenize with a smaller one")
        self.facts.update(tokens=self.tokens, block_size=block_size)

    def __len__(self) -> int:
        return self.tokens - self.block - 1

    def name_of(self, index: int) -> str:
        return f"{self.file}@{index}"

    def plan(self, epoch: int) -> list[list[int]]:
        """Random window starts, as nanoGPT samples: one epoch is about one pass over the tokens."""
        batches = max(1, self.tokens // (self.block * self.batch_size))
        return self.rng(epoch).integers(0, len(self), (batches, self.batch_size)).tolist()

    def load(self, index: int, rng: np.random.Generator) -> dict[str, Any]:
        if self._data is None:
            self._data = np.memmap(self.file, np.uint16, mode="r")
        return {"tokens": self._data[index : index + self.block + 1].astype(np.int64)}

    def collate(self, samples: Sequence[dict[str, Any]]) -> dict[str, Any]:
        return {"tokens": np.stack([s["tokens"] for s in samples])}  # (B, T + 1)

    def __getstate__(self):
        return {**self.__dict__, "_data": self._data if isinstance(self._data, np.ndarray) and not isinstance(self._data, np.memmap) else None}


def _tokenizers():
    try:
        import tokenizers
    except ImportError:
        raise UsageError("raw text for gpt needs the tokenizers package: pip install tokenizers (or give a tokenized train.bin)") from None
    return tokenizers


def tokenize(text: Path, tokenizer_file: Path, vocab: int) -> np.ndarray:
    """The ids of a text file, line by line (lines joined by the tokenizer's own newline handling)."""
    try:
        tokenizer = _tokenizers().Tokenizer.from_file(str(tokenizer_file))
    except UsageError:
        raise
    except Exception as exc:
        raise bad_data(tokenizer_file, f"is not a tokenizers JSON file ({type(exc).__name__}: {exc})", "save it with Tokenizer.save()") from None
    if tokenizer.get_vocab_size() > vocab:
        raise bad_data(tokenizer_file, f"has {tokenizer.get_vocab_size():,} tokens, beyond the flavor's vocabulary of {vocab}",
                       "use a flavor with a larger vocabulary (paper: GPT-2's 50,257) or a smaller tokenizer")
    try:
        lines = text.read_text(encoding="utf-8").splitlines(keepends=True)
    except UnicodeDecodeError as exc:
        raise bad_data(text, f"is not UTF-8 text (byte {exc.start})", "convert it to UTF-8") from None
    ids = [i for enc in tokenizer.encode_batch(lines) for i in enc.ids]
    return np.array(ids, np.uint16 if vocab <= 65536 else np.int32)


# -- generated datasets ----------------------------------------------------------------------


def _zipf_words(rng: np.random.Generator, words: list[str], n: int) -> list[str]:
    p = 1.0 / np.arange(1, len(words) + 1)
    return [words[i] for i in rng.choice(len(words), n, p=p / p.sum())]


def make_parallel(out: Path, size: int, rng: np.random.Generator, src_vocab: int = 256, tgt_vocab: int = 256, mean_len: float = 8.0,
                  max_len: int = 50, langs: tuple[str, str] = ("en", "vi")) -> dict[str, Any]:
    """`size` sentence pairs of Zipf-distributed made-up words, target lengths correlated with
    source lengths, and both vocabularies (TF NMT's layout, specials first)."""
    out.mkdir(parents=True, exist_ok=True)
    vocabs = [[f"{lang}{i}" for i in range(max(8, v - FIRST_WORD))] for lang, v in zip(langs, (src_vocab, tgt_vocab))]
    src_lines, tgt_lines = [], []
    for _ in range(size):
        n = int(np.clip(round(rng.lognormal(np.log(mean_len) - 0.08, 0.4)), 1, max_len - 1))
        m = int(np.clip(round(n * 1.2 * rng.lognormal(0, 0.2)), 1, max_len - 1))
        src_lines.append(" ".join(_zipf_words(rng, vocabs[0], n)))
        tgt_lines.append(" ".join(_zipf_words(rng, vocabs[1], m)))
    for lang, lines, vocab in zip(langs, (src_lines, tgt_lines), vocabs):
        (out / f"train.{lang}").write_text("\n".join(lines) + "\n", encoding="utf-8")
        (out / f"vocab.{lang}").write_text("\n".join(["<unk>", "<s>", "</s>", *vocab]) + "\n", encoding="utf-8")
    return {"pairs": size, "languages": list(langs)}


def make_text(out: Path, size: int, rng: np.random.Generator, vocab: int = 512) -> dict[str, Any]:
    """train.txt of about `size` tokens of made-up Zipf-distributed words and a byte-level BPE
    tokenizer.json trained on it with the tokenizers library (at most `vocab` tokens)."""
    tk = _tokenizers()
    out.mkdir(parents=True, exist_ok=True)
    words = [f"w{i}" for i in range(200)]
    lines = [" ".join(_zipf_words(rng, words, int(rng.integers(5, 20)))) for _ in range(max(1, size // 8))]
    (out / "train.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    tokenizer = tk.Tokenizer(tk.models.BPE())
    tokenizer.pre_tokenizer = tk.pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = tk.decoders.ByteLevel()
    trainer = tk.trainers.BpeTrainer(vocab_size=min(vocab, 512), initial_alphabet=tk.pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tokenizer.train_from_iterator(lines, trainer)
    tokenizer.save(str(out / "tokenizer.json"))
    return {"lines": len(lines), "tokenizer_vocab": tokenizer.get_vocab_size()}


def make_tokens(out: Path, size: int, rng: np.random.Generator, vocab: int = 512) -> dict[str, Any]:
    """train.bin of `size` Zipf-distributed uint16 token ids below `vocab`."""
    out.mkdir(parents=True, exist_ok=True)
    p = 1.0 / np.arange(1, vocab + 1)
    ids = rng.choice(vocab, size, p=p / p.sum()).astype(np.uint16)
    ids.tofile(out / "train.bin")
    return {"tokens": size, "vocab": vocab}
