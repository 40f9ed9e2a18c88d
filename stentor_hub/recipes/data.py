"""Text -> token blocks, shared by the training recipe and the perplexity evaluation.

The rules are the card's: every document is cleaned (:func:`clean_text`), tokenized without
special tokens, followed by one EOS, the documents are concatenated, and the stream is cut into
full blocks of ``block_size`` tokens (the tail that does not fill a block is dropped). Training and
evaluation call the same functions, so ``stentor-hub eval perplexity`` on a validation source
reproduces the Trainer's ``eval_loss`` on it.

A *source* is a local file, a glob of files, or a Hugging Face Hub dataset id (streamed):

* ``.txt``: documents are separated by blank lines (a line is a paragraph; a run of lines is a
  document, e.g. a book in ``gutenberg_train.txt``);
* ``.jsonl`` / ``.json``: one document per record, text in ``text_field`` (default ``text``);
* ``.parquet``: one document per row of the ``text_field`` column;
* anything else that is not an existing path is taken as a Hub dataset id (``datasets``
  streaming, split ``train`` unless told).

A source can carry limits: ``max_chars`` (stop reading after that many characters of raw text,
cutting the last document there) and ``max_doc_chars`` (keep the start of every document), so a
small CPU run reads a few hundred KB of a big file, sampled across its books.
"""

from __future__ import annotations

import glob as _glob
import hashlib
import json
import os
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

from stentor_hub.errors import DataError, MissingInputError
from stentor_hub.helpers import not_utf8, read_jsonl

LOCAL_SUFFIXES = (".txt", ".jsonl", ".json", ".parquet")
# bump when clean_text or the document rules change: it invalidates cached token files
DATA_FORMAT_VERSION = 1


def collapse_whitespace_python(text: str) -> str:
    """Every run of whitespace (``str.isspace``) one space, none at the ends. One ``str.split()``
    does it: every line boundary is whitespace to it, and it drops the empty pieces."""
    return " ".join(text.split())


def _collapse_whitespace_engine():
    """The compiled one-pass form (same result; the split builds an object per word, a third
    of a preparation worker's time) with the compiled TokenMonster engine, else the split:
    ``STENTOR_TOKENMONSTER=python`` turns both off."""
    from stentor_hub.tokenmonster import NATIVE

    # a build from before it has none
    return getattr(NATIVE, "collapse_whitespace", collapse_whitespace_python)


collapse_whitespace = _collapse_whitespace_engine()


def clean_text(text: str) -> str:
    """The card's cleaning: NFKC; strip every line, drop empty lines, join with single spaces;
    collapse runs of whitespace. After NFKC, :func:`collapse_whitespace` does all of that but
    NFKC (the same result as the rule written out step by step: tests/test_train_data.py)."""
    return collapse_whitespace(unicodedata.normalize("NFKC", text))


@dataclass
class Source:
    """One place documents come from, with optional limits.

    ``path`` is a file, a glob, or a Hub dataset id; ``max_chars`` caps the raw characters read;
    ``max_doc_chars`` keeps only the start of each document (a sample of many books, say);
    ``split``/``name``/``text_field`` are for Hub datasets and structured files."""

    path: str
    max_chars: int | None = None
    max_doc_chars: int | None = None
    split: str = "train"
    name: str | None = None
    text_field: str = "text"
    extra: dict = field(default_factory=dict)

    @classmethod
    def parse(cls, spec: "str | os.PathLike | dict | Source") -> "Source":
        if isinstance(spec, Source):
            return spec
        if isinstance(spec, (str, os.PathLike)):
            return cls(path=expand_path(str(spec)))
        if isinstance(spec, dict):
            spec = dict(spec)
            if "path" not in spec:
                raise DataError(f"data source {spec} has no 'path' (a file, a glob, or a Hub dataset id)")
            known = {k: spec.pop(k) for k in ("path", "max_chars", "max_doc_chars", "split", "name", "text_field") if k in spec}
            known["path"] = expand_path(str(known["path"]))
            if spec:
                raise DataError(
                    f"data source {known['path']}: unknown keys {sorted(spec)}; "
                    "allowed: path, max_chars, max_doc_chars, split, name, text_field"
                )
            return cls(**known)
        raise DataError(f"a data source must be a path, a Hub dataset id or a mapping with 'path', got {spec!r}")

    def is_local(self) -> bool:
        return bool(local_files(self.path)) or _looks_local(self.path)

    def describe(self) -> dict:
        out = {"path": self.path, "kind": "local" if self.is_local() else "hub"}
        if self.max_chars is not None:
            out["max_chars"] = self.max_chars
        if self.max_doc_chars is not None:
            out["max_doc_chars"] = self.max_doc_chars
        if not self.is_local():
            out.update(split=self.split, name=self.name)
        return out


def expand_path(path: str) -> str:
    """Expand ``~``, environment variables and ``{shared}`` (the development data folder)."""
    if "{shared}" in path:
        from stentor_hub._resources import shared_dir

        path = path.replace("{shared}", str(shared_dir(required=True)))
    return os.path.expandvars(os.path.expanduser(path))


def _looks_local(path: str) -> bool:
    return path.startswith((".", "/", "~")) or path.endswith(LOCAL_SUFFIXES) or any(c in path for c in "*?[")


def local_files(path: str) -> list[Path]:
    """The files a local path or glob names, sorted (a folder means every supported file in it)."""
    p = Path(path)
    if p.is_file():
        return [p]
    if p.is_dir():
        return sorted(f for f in p.rglob("*") if f.is_file() and f.suffix in LOCAL_SUFFIXES)
    return sorted(Path(f) for f in _glob.glob(path, recursive=True) if Path(f).is_file())


def _txt_documents(path: Path) -> Iterator[str]:
    lines: list[str] = []
    with open(path, encoding="utf-8") as f:
        try:
            for line in f:
                if not line.isspace():  # = line.strip() (a line is never ""), without the copy
                    lines.append(line)
                elif lines:
                    yield "".join(lines)
                    lines = []
        except UnicodeDecodeError:
            raise not_utf8(path, DataError) from None
    if lines:
        yield "".join(lines)


def _jsonl_documents(path: Path, text_field: str) -> Iterator[str]:
    """The ``text_field`` of every record; a record that is not an object, a text that is not a
    string (a number, null, a list: never trained on as "5", "None", "['a']") or holds a lone
    surrogate (``"\\ud800"``, not encodable) is a :class:`DataError` naming the file and line."""
    for lineno, record in read_jsonl(path, DataError):
        if not isinstance(record, dict):
            raise DataError(f"{path}:{lineno}: the record is a {type(record).__name__}, not a JSON object "
                            f"with a '{text_field}' field")
        if text_field not in record:
            raise DataError(
                f"{path}:{lineno}: no '{text_field}' field (has {sorted(record)[:8]}); "
                f"set text_field in the data source"
            )
        text = record[text_field]
        if not isinstance(text, str):
            shown = "null" if text is None else json.dumps(text)[:40]
            raise DataError(f"{path}:{lineno}: '{text_field}' is {shown} (a {type(text).__name__}), not a string; "
                            "fix the record or drop it")
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as e:
            raise DataError(f"{path}:{lineno}: '{text_field}' holds a lone surrogate {text[e.start]!r} at character "
                            f"{e.start} (an unpaired \\ud800-\\udfff escape); fix the escape or drop the record") from None
        yield text


def _parquet_documents(path: Path, text_field: str) -> Iterator[str]:
    import pyarrow.parquet as pq

    table = pq.ParquetFile(path)
    if text_field not in table.schema_arrow.names:
        raise DataError(f"{path}: no '{text_field}' column (has {table.schema_arrow.names}); set text_field in the data source")
    row = 0
    for batch in table.iter_batches(columns=[text_field]):
        for text in batch.column(0).to_pylist():
            row += 1
            if text is not None and not isinstance(text, str):
                raise DataError(f"{path}: row {row}: column '{text_field}' is a {type(text).__name__} ({str(text)[:40]}), "
                                "not a string; name a text column with text_field")
            if text is not None:
                yield text


def _hub_documents(source: Source) -> Iterator[str]:
    from datasets import load_dataset

    try:
        dataset = load_dataset(source.path, source.name, split=source.split, streaming=True)
    except Exception as e:  # offline, unknown id, gated: say which source and what to do
        raise DataError(
            f"data source '{source.path}' is neither an existing local file nor a loadable Hub dataset "
            f"({type(e).__name__}: {str(e)[:200]}). Check the path, or log in / go online for Hub datasets."
        ) from None
    for record in dataset:
        if source.text_field not in record:
            raise DataError(f"Hub dataset {source.path}: records have no '{source.text_field}' field; set text_field")
        yield str(record[source.text_field])


def iter_documents(source: "str | os.PathLike | dict | Source") -> Iterator[str]:
    """Raw documents of a source, in a fixed order, honouring ``max_doc_chars`` and ``max_chars``."""
    source = Source.parse(source)
    if source.is_local():
        files = local_files(source.path)
        if not files:
            raise MissingInputError(f"data source '{source.path}': no such file (or the glob matches nothing)")

        def documents() -> Iterator[str]:
            for path in files:
                if path.suffix in (".jsonl", ".json"):
                    yield from _jsonl_documents(path, source.text_field)
                elif path.suffix == ".parquet":
                    yield from _parquet_documents(path, source.text_field)
                else:
                    yield from _txt_documents(path)

        stream = documents()
    else:
        stream = _hub_documents(source)
    budget = source.max_chars
    for doc in stream:
        if source.max_doc_chars is not None:
            doc = doc[: source.max_doc_chars]
        if budget is not None:
            if budget <= 0:
                return
            doc = doc[:budget]
            budget -= len(doc)
        yield doc


def tokenize_document(text: str, tokenizer) -> list[int]:
    """Token ids of one cleaned document followed by EOS (empty documents give nothing)."""
    text = clean_text(text)
    if not text:
        return []
    ids = list(tokenizer.encode(text, add_special_tokens=False))
    ids.append(tokenizer.eos_token_id)
    return ids


def iter_token_documents(source, tokenizer) -> Iterator[list[int]]:
    """Token ids (with EOS) of every non-empty document of a source."""
    for doc in iter_documents(source):
        ids = tokenize_document(doc, tokenizer)
        if ids:
            yield ids


def pack_tokens(documents: Iterable[list[int]], max_tokens: int | None = None) -> list[int]:
    """Concatenate token documents, stopping at exactly ``max_tokens`` when given."""
    out: list[int] = []
    for ids in documents:
        if max_tokens is not None and len(out) + len(ids) >= max_tokens:
            out.extend(ids[: max_tokens - len(out)])
            break
        out.extend(ids)
    return out


def to_blocks(tokens, block_size: int, max_blocks: int | None = None):
    """A 1-D token sequence cut into full ``[n_blocks, block_size]`` blocks (tail dropped)."""
    import torch

    tokens = torch.as_tensor(tokens, dtype=torch.long)
    n_blocks = tokens.numel() // block_size
    if max_blocks is not None:
        n_blocks = min(n_blocks, max_blocks)
    return tokens[: n_blocks * block_size].view(n_blocks, block_size)


def build_eval_blocks(source, tokenizer, block_size: int, max_samples: int | None = None):
    """Evaluation blocks of a source: a ``torch.LongTensor`` of shape ``[n_blocks, block_size]``.

    Documents are cleaned, tokenized, followed by EOS, concatenated and cut into full blocks;
    ``max_samples`` caps the number of blocks (and stops reading once there are enough). A
    prepared-shards folder (``stentor-hub data prepare``) gives the blocks of its eval split.
    Raises ``ValueError`` when the source gives not even one full block."""
    if block_size < 2:
        raise DataError(f"block_size must be at least 2 (one input and one predicted token), got {block_size}")
    max_tokens = None if max_samples is None else max_samples * block_size
    shards = prepared_folder(source)
    if shards is not None:  # a prepared folder: its eval split, the tokens the Trainer evaluated on
        from stentor_hub.recipes.prepare import PreparedShards

        eval_split = PreparedShards(shards).eval
        tokens = eval_split[0:len(eval_split) if max_tokens is None else min(max_tokens, len(eval_split))]
        blocks = to_blocks(tokens.astype("int64"), block_size, max_samples)
        if blocks.shape[0] == 0:
            raise DataError(f"the prepared eval split in {shards} has {len(tokens)} tokens, fewer than one block of {block_size}")
        return blocks
    tokens = pack_tokens(iter_token_documents(source, tokenizer), max_tokens)
    blocks = to_blocks(tokens, block_size, max_samples)
    if blocks.shape[0] == 0:
        raise DataError(
            f"data source {Source.parse(source).path} gives {len(tokens)} tokens, fewer than one block of "
            f"{block_size}; use more text (raise max_chars) or a smaller block size"
        )
    return blocks


def prepared_folder(source) -> Path | None:
    """The folder, when ``source`` names a prepared-shards folder (one holding ``index.json``)."""
    if isinstance(source, (str, os.PathLike)):
        folder = Path(expand_path(str(source)))
        if (folder / "index.json").is_file():
            return folder
    return None


def tokenizer_fingerprint(tokenizer) -> str:
    """A short hash that changes when the tokenizer's vocabulary or special ids change."""
    h = hashlib.sha256()
    h.update(type(tokenizer).__name__.encode())
    h.update(str((len(tokenizer), tokenizer.eos_token_id)).encode())
    vocab_file = getattr(tokenizer, "vocab_file", None)
    if vocab_file and os.path.isfile(vocab_file):
        h.update(Path(vocab_file).read_bytes())
    else:
        h.update(json.dumps(sorted(tokenizer.get_vocab().items())).encode())
    return h.hexdigest()[:16]


# -- training data: token streams, the held-out split, the cache -------------------------------


def interleave(streams: Iterable[Iterator]) -> Iterator:
    """Round-robin over several iterators until all are exhausted (deterministic mixing)."""
    active = [iter(s) for s in streams]
    while active:
        for it in list(active):
            try:
                yield next(it)
            except StopIteration:
                active.remove(it)


def _source_identity(source: Source) -> dict:
    """What the cache key needs to know about a source: its settings and, for local files,
    their sizes and modification times (an edited file is tokenized again)."""
    ident = {"path": source.path, "max_chars": source.max_chars, "max_doc_chars": source.max_doc_chars, "split": source.split,
             "name": source.name, "text_field": source.text_field}
    if source.is_local():
        ident["files"] = [(str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in local_files(source.path)]
    return ident


def default_cache_dir() -> Path:
    return Path(os.environ.get("STENTOR_CACHE", Path.home() / ".cache" / "stentor_hub")) / "tokens"


@dataclass
class TokenData:
    """Training and evaluation tokens of a recipe: flat uint16 token sequences (memory-mapped
    prepared shards, see :mod:`stentor_hub.recipes.prepare`, or arrays from the reference)."""

    train: "object"  # TokenArray or numpy.ndarray[uint16]
    eval: "object"
    eval_held_out: bool  # True when the eval tokens were held out from the train stream
    cache_file: Path | None = None  # the shards' index.json
    from_cache: bool = False


def reference_token_data(train_sources: list, eval_sources: list, tokenizer, block_size: int,
                         source_token_budget: int | None, max_eval_samples: int | None) -> TokenData:
    """The data rules in plain, single-process, in-memory form: the yardstick the prepared shards
    (:func:`load_token_data`) are tested against; it holds every token in memory, so it is for
    small data only.

    Train tokens: documents of all train sources interleaved, capped at exactly
    ``source_token_budget`` tokens. Eval tokens: the eval sources, capped at ``max_eval_samples``
    blocks; with no eval sources, the first documents of the train stream are held out for
    evaluation (whole documents, until there are ``max_eval_samples`` blocks) and training
    starts after them."""
    import numpy as np

    train_sources = [Source.parse(s) for s in train_sources]
    eval_sources = [Source.parse(s) for s in eval_sources or []]
    max_eval_tokens = None if max_eval_samples is None else max_eval_samples * block_size

    def documents(sources):
        return interleave(iter_token_documents(s, tokenizer) for s in sources)

    if eval_sources:
        eval_tokens = pack_tokens(documents(eval_sources), max_eval_tokens)
        train_docs = documents(train_sources)
    else:
        train_docs = documents(train_sources)
        eval_tokens: list[int] = []
        if max_eval_tokens is None:
            raise DataError("with no data.eval_sources, data.max_eval_samples must be set (blocks to hold out)")
        for ids in train_docs:
            eval_tokens.extend(ids)
            if len(eval_tokens) >= max_eval_tokens:
                break
        eval_tokens = eval_tokens[:max_eval_tokens]
    train_tokens = pack_tokens(train_docs, source_token_budget)
    return TokenData(np.asarray(train_tokens, dtype=np.uint16), np.asarray(eval_tokens, dtype=np.uint16),
                     not eval_sources)


def load_token_data(
    train_sources: list,
    eval_sources: list,
    tokenizer,
    block_size: int,
    source_token_budget: int | None,
    max_eval_samples: int | None,
    cache_dir: str | os.PathLike | None = None,
    workers: int | None = None,
) -> TokenData:
    """The train and eval tokens of a recipe's data (rules: :func:`reference_token_data`), as
    prepared shards in the token cache (``cache_dir``/<hash of the data settings>): prepared on
    first use with ``workers`` processes (default all cores), memory-mapped after that."""
    from stentor_hub.recipes.prepare import data_key, key_digest, prepare_shards

    train_sources = [Source.parse(s) for s in train_sources]
    eval_sources = [Source.parse(s) for s in eval_sources or []]
    key = data_key(train_sources, eval_sources, tokenizer, block_size, source_token_budget, max_eval_samples)
    cache_dir = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
    folder = cache_dir / key_digest(key)
    shards = prepare_shards(train_sources, eval_sources, tokenizer, block_size, source_token_budget, max_eval_samples,
                            folder, workers=workers)
    return TokenData(shards.train, shards.eval, shards.eval_held_out, shards.index_file, not shards.prepared_now)


class BlockDataset:
    """Fixed-length blocks of a flat token sequence (a memory-mapped :class:`TokenArray` or an
    array), read from it one block at a time; each item is ``{"input_ids", "labels"}`` with labels
    equal to the inputs (the model shifts them)."""

    def __init__(self, tokens, block_size: int, max_blocks: int | None = None):
        self.tokens, self.block_size = tokens, block_size
        n_blocks = len(tokens) // block_size
        self.n_blocks = n_blocks if max_blocks is None else min(n_blocks, max_blocks)

    def __len__(self) -> int:
        return self.n_blocks

    def __getitem__(self, index: int) -> dict:
        import numpy as np
        import torch

        if not 0 <= index < self.n_blocks:
            raise IndexError(f"block {index} out of range for {self.n_blocks} blocks")
        start = index * self.block_size
        ids = torch.from_numpy(np.asarray(self.tokens[start:start + self.block_size]).astype(np.int64))
        return {"input_ids": ids, "labels": ids}
