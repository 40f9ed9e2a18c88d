"""Prepared token shards: a recipe's train and eval tokens, tokenized once, in parallel, to disk.

    stentor-hub data prepare --config stentor2-30m [key=value ...] [--workers N] [--out DIR]

The rules are exactly :mod:`stentor_hub.recipes.data`'s (the card's): every document cleaned,
tokenized, followed by EOS; train documents interleaved round-robin across sources and cut at
exactly ``data.source_token_budget`` tokens; eval tokens from ``data.eval_sources``, or held out
from the start of the train stream (whole documents, cut at ``max_eval_samples`` blocks; training
starts at the next document). :func:`~stentor_hub.recipes.data.reference_token_data` is the plain
in-memory version of the same rules, kept beside this one as its yardstick.

What is parallel: the main process reads documents in order and hands chunks of them to
``--workers`` processes that clean and tokenize; results come back in submission order, so the
output does not depend on the number of workers. A bounded window of chunks is in flight, so
memory does not grow with the budget.

A prepared folder holds ``train-NNNNN.bin`` / ``eval-NNNNN.bin`` (raw little-endian uint16 token
ids, concatenated documents) and ``index.json`` (format version, tokenizer fingerprint, source
identities, token counts, shard sizes and SHA-256). Shards are written to a temporary name and
renamed into place; after each one ``progress.json`` records where the document stream stands, so a
killed preparation resumes from its last complete shard and ends with the same bytes. ``index.json``
is written last: a folder without it is not a usable dataset.

Training memory-maps the shards (:class:`TokenArray`): no process holds the whole token stream.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import hashlib
import itertools
import json
import os
import time
from collections import deque
from pathlib import Path
from typing import Any

import numpy as np

from stentor_hub.errors import DataError, MissingInputError
from stentor_hub.helpers import atomic_leftovers, write_text_atomic
from stentor_hub.recipes.data import (
    DATA_FORMAT_VERSION, Source, _looks_local, _source_identity, default_cache_dir, iter_documents,
    local_files, tokenizer_fingerprint,
)

SHARD_FORMAT_VERSION = 1
INDEX_NAME = "index.json"
PROGRESS_NAME = "progress.json"
LOCK_NAME = ".lock"
TOKEN_DTYPE = np.dtype("<u2")
# 16M tokens = 32 MB per shard: a few dozen files for the 30M recipe's 400M tokens, and at most one
# shard of work lost to a kill
DEFAULT_SHARD_TOKENS = 1 << 24
# raw characters per task sent to a worker: large enough that inter-process traffic is noise,
# small enough that a window of them stays a few MB
CHUNK_CHARS = 1 << 20


class ShardsError(DataError):
    """A prepared-shards folder cannot be used for this recipe; the message says what to do."""


# -- identity: which data a folder holds --------------------------------------------------------


def data_key(train_sources: list[Source], eval_sources: list[Source], tokenizer, block_size: int,
             source_token_budget: int | None, max_eval_samples: int | None) -> dict:
    """Everything the tokens depend on. Its hash names the folder in the token cache."""
    return {
        "version": DATA_FORMAT_VERSION, "tokenizer": tokenizer_fingerprint(tokenizer),
        "train": [_source_identity(s) for s in train_sources], "eval": [_source_identity(s) for s in eval_sources],
        "block_size": block_size, "source_token_budget": source_token_budget,
        "max_eval_tokens": None if max_eval_samples is None else max_eval_samples * block_size,
    }


def key_digest(key: dict) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:24]


def _portable(key: dict) -> dict:
    """The key without what changes when shards are copied to another machine: the local files'
    folders, sizes and modification times (a source is named by its file name there)."""
    key = json.loads(json.dumps(key, default=str))  # a fresh copy, tuples and paths as JSON has them
    for split in ("train", "eval"):
        for ident in key[split]:
            if ident.pop("files", None) is not None:
                ident["path"] = Path(ident["path"]).name
    return key


def _mismatch(expected: dict, found: dict) -> list[str]:
    a, b = _portable(expected), _portable(found)
    return [k for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]


# -- reading prepared shards ---------------------------------------------------------------------


class TokenArray:
    """One split's tokens: the concatenation of its shards, memory-mapped (read-only), opened on
    first use. Slicing returns a NumPy array of just the slice; pickling keeps only the paths, so
    data-loader workers map the files themselves."""

    def __init__(self, paths: list[Path], lengths: list[int]):
        self.paths = [Path(p) for p in paths]
        self.lengths = [int(n) for n in lengths]
        self.starts = np.concatenate([[0], np.cumsum(self.lengths, dtype=np.int64)])
        self._maps: list[np.ndarray] | None = None

    def __getstate__(self):
        return {"paths": self.paths, "lengths": self.lengths}

    def __setstate__(self, state):
        self.__init__(state["paths"], state["lengths"])

    def _open(self) -> list[np.ndarray]:
        if self._maps is None:
            self._maps = [np.memmap(p, dtype=TOKEN_DTYPE, mode="r", shape=(n,)) if n else np.zeros(0, TOKEN_DTYPE)
                          for p, n in zip(self.paths, self.lengths)]
        return self._maps

    def __len__(self) -> int:
        return int(self.starts[-1])

    def __getitem__(self, index):
        if isinstance(index, (int, np.integer)):
            if not -len(self) <= index < len(self):
                raise IndexError(f"token {index} out of range for {len(self)} tokens")
            return self[int(index) % len(self):int(index) % len(self) + 1][0]
        start, stop, step = index.indices(len(self))
        if step != 1:
            raise ValueError("TokenArray slices must be contiguous")
        parts = []
        maps = self._open()
        shard = int(np.searchsorted(self.starts, start, side="right")) - 1
        while start < stop and shard < len(maps):
            lo, hi = start - self.starts[shard], min(stop, self.starts[shard + 1]) - self.starts[shard]
            parts.append(maps[shard][lo:hi])
            start = int(self.starts[shard] + hi)
            shard += 1
        if len(parts) == 1:
            return np.array(parts[0])
        return np.concatenate(parts) if parts else np.zeros(0, TOKEN_DTYPE)

    def __array__(self, dtype=None, copy=None):
        out = self[0:len(self)]
        return out if dtype is None else out.astype(dtype)

    def astype(self, dtype) -> np.ndarray:
        return np.asarray(self, dtype=dtype)


class PreparedShards:
    """An opened prepared folder: ``train`` and ``eval`` :class:`TokenArray`, and the index."""

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)
        self.index_file = self.folder / INDEX_NAME
        self.prepared_now, self.seconds, self.bytes_read = False, 0.0, 0  # set by prepare_shards
        try:
            self.index = json.loads(self.index_file.read_text())
        except FileNotFoundError:
            raise ShardsError(f"{self.folder} holds no {INDEX_NAME}: it is not a prepared dataset (or its preparation "
                              "did not finish); run `stentor-hub data prepare` for it") from None
        if self.index.get("format_version") != SHARD_FORMAT_VERSION:
            raise ShardsError(f"{self.index_file}: shard format version {self.index.get('format_version')}, this "
                              f"stentor-hub reads version {SHARD_FORMAT_VERSION}; prepare the data again")
        self.splits = {}
        for split in ("train", "eval"):
            shards = self.index["splits"][split]["shards"]
            paths = [self.folder / s["file"] for s in shards]
            for path, shard in zip(paths, shards):
                if not path.is_file() or path.stat().st_size != shard["tokens"] * TOKEN_DTYPE.itemsize:
                    raise ShardsError(f"{path} is missing or has the wrong size (expected {shard['tokens']} tokens); "
                                      "copy the whole prepared folder again, or prepare it again")
            self.splits[split] = TokenArray(paths, [s["tokens"] for s in shards])

    @property
    def train(self) -> TokenArray:
        return self.splits["train"]

    @property
    def eval(self) -> TokenArray:
        return self.splits["eval"]

    @property
    def eval_held_out(self) -> bool:
        return bool(self.index["eval_held_out"])

    def source_tokens(self, split: str = "train") -> list[dict] | None:
        """Tokens each source gave to ``split``, ``[{"source": ..., "tokens": n}]`` in the recipe's
        order (held-out eval tokens are counted against the train sources); ``None`` for a folder
        prepared before the counts were recorded."""
        counts = self.index["splits"][split].get("source_tokens")
        if counts is None:
            return None
        sources = self.index["sources"]["eval" if split == "eval" and not self.eval_held_out else "train"]
        return [{"source": source, "tokens": n} for source, n in zip(sources, counts)]

    def check_matches(self, key: dict) -> None:
        """Raise :class:`ShardsError` unless these shards hold the data ``key`` describes."""
        differ = _mismatch(key, self.index["key"])
        if differ:
            raise ShardsError(
                f"{self.folder} holds tokens prepared for other data settings ({', '.join(differ)} differ from the "
                "recipe); prepare this recipe into another folder (stentor-hub data prepare --out DIR) or point "
                "data.shards_dir at the matching one"
            )


# -- tokenizing, in order, on several processes ----------------------------------------------------

_WORKER_TOKENIZER = None


def _init_worker(tokenizer) -> None:
    global _WORKER_TOKENIZER
    _WORKER_TOKENIZER = tokenizer


def _tokenize_chunk(docs: list[str]) -> tuple[np.ndarray, list[int], int]:
    """(the documents' tokens concatenated, tokens per document (0 for an empty one), UTF-8 bytes
    read). The per-document rule is :func:`~stentor_hub.recipes.data.tokenize_document`'s."""
    from stentor_hub.recipes.data import tokenize_document

    id_lists, n_bytes = [], 0
    for doc in docs:
        n_bytes += len(doc.encode("utf-8", "surrogatepass"))
        id_lists.append(tokenize_document(doc, _WORKER_TOKENIZER))
    lengths = [len(ids) for ids in id_lists]
    # one array filled from the lists: a third less time than an array per document, concatenated
    flat = np.fromiter(itertools.chain.from_iterable(id_lists), dtype=TOKEN_DTYPE, count=sum(lengths))
    return flat, lengths, n_bytes


class _SourceTokens:
    """Token documents of one source in order, ``(raw document index, tokens)``, empty documents
    skipped; a window of chunks is tokenized ahead on the pool (or here, with no pool)."""

    def __init__(self, source: Source, skip: int, pool, window: int, stats: dict, ahead: dict):
        self.documents = itertools.islice(iter_documents(source), skip, None)
        self.next_raw = skip
        self.pool, self.window, self.stats, self.ahead = pool, window, stats, ahead
        self.pending: deque = deque()
        self.pending_chars = 0
        self.ready: deque = deque()
        self.read_all = False

    def _submit(self) -> None:
        # near the end of a budget, read (and tokenize) little more than is needed; how far
        # ahead the reading goes never changes the output, only the wasted work
        limit = self.ahead.get("chars")
        chunk = CHUNK_CHARS if limit is None else max(1 << 14, min(CHUNK_CHARS, limit // self.window))
        docs, chars = [], 0
        for doc in self.documents:
            docs.append(doc)
            chars += len(doc)
            if chars >= chunk:
                break
        if not docs:
            self.read_all = True
            return
        work = self.pool.apply_async(_tokenize_chunk, (docs,)) if self.pool else _tokenize_chunk(docs)
        self.pending.append((self.next_raw, work, chars))
        self.pending_chars += chars
        self.next_raw += len(docs)

    def next(self) -> tuple[int, np.ndarray] | None:
        while not self.ready:
            limit = self.ahead.get("chars")
            while not self.read_all and len(self.pending) < self.window and (
                    not self.pending or limit is None or self.pending_chars < limit):
                self._submit()
            if not self.pending:
                return None
            first, work, chars = self.pending.popleft()
            self.pending_chars -= chars
            flat, lengths, n_bytes = work.get() if self.pool else work
            self.stats["bytes"] += n_bytes
            offset = 0
            for i, n in enumerate(lengths):
                if n:
                    self.ready.append((first + i, flat[offset:offset + n]))
                    offset += n
        return self.ready.popleft()


class _Interleaved:
    """Round-robin over the sources' token documents, as :func:`~stentor_hub.recipes.data.interleave`,
    with its position as plain data (``state``) so a resumed preparation continues exactly there."""

    def __init__(self, sources: list[Source], pool, window: int, stats: dict, state: dict | None = None):
        state = copy.deepcopy(state) if state else {"active": list(range(len(sources))), "turn": 0,
                                                    "consumed": [0] * len(sources)}
        self.active, self.turn, self.consumed = state["active"], state["turn"], state["consumed"]
        self.ahead: dict = {"chars": None}  # how much text is worth reading ahead (None: no limit)
        self.streams = {i: _SourceTokens(sources[i], self.consumed[i], pool, window, stats, self.ahead)
                        for i in self.active}

    def need(self, tokens: int | None) -> None:
        """Tokens still wanted (None: all); reading ahead stops at a generous estimate of them."""
        self.ahead["chars"] = None if tokens is None else max(1, tokens) * 8 // max(1, len(self.active))

    def state(self) -> dict:
        return {"active": list(self.active), "turn": self.turn, "consumed": list(self.consumed)}

    def next(self) -> np.ndarray | None:
        while self.active:
            i = self.active[self.turn]
            item = self.streams[i].next()
            if item is None:  # exhausted: dropped from the rotation, the next source takes its turn
                del self.active[self.turn]
                if self.turn >= len(self.active):
                    self.turn = 0
                continue
            raw_index, tokens = item
            self.consumed[i] = raw_index + 1
            self.source = i  # of the document returned: what per-source counts add to
            self.turn = (self.turn + 1) % len(self.active)
            return tokens
        return None


class _ShardWriter:
    """Appends tokens to ``{split}-NNNNN.bin`` files of ``shard_tokens`` tokens; each is written
    under a temporary name and renamed when full (or at :meth:`close`)."""

    def __init__(self, folder: Path, split: str, shard_tokens: int, done: list[dict]):
        self.folder, self.split, self.shard_tokens = folder, split, shard_tokens
        self.done = list(done)
        self.tokens = sum(s["tokens"] for s in self.done)
        self._file = None

    def _open(self) -> None:
        name = f"{self.split}-{len(self.done):05d}.bin"
        self._name, self._tmp = name, self.folder / f".{name}.tmp"
        self._file, self._hash, self._count = open(self._tmp, "wb"), hashlib.sha256(), 0

    def write(self, tokens: np.ndarray) -> int:
        """Write ``tokens``; returns how many shards it completed."""
        completed = 0
        while len(tokens):
            if self._file is None:
                self._open()
            take = tokens[: self.shard_tokens - self._count]
            data = take.astype(TOKEN_DTYPE, copy=False).tobytes()
            self._file.write(data)
            self._hash.update(data)
            self._count += len(take)
            self.tokens += len(take)
            tokens = tokens[len(take):]
            if self._count == self.shard_tokens:
                self._finish()
                completed += 1
        return completed

    def _finish(self) -> None:
        # the shared helpers write text; a shard is streamed bytes, so the rename is done here
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        os.replace(self._tmp, self.folder / self._name)
        self.done.append({"file": self._name, "tokens": self._count, "sha256": self._hash.hexdigest()})
        self._file = None

    def close(self) -> None:
        if self._file is not None and self._count:
            self._finish()
        elif self._file is not None:
            self._file.close()
            self._tmp.unlink()
            self._file = None


def _progress_bar(split: str, total: int | None, enabled: bool, initial: int = 0):
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, disable=not enabled, desc=f"prepare {split}", unit="tok",
                unit_scale=True, dynamic_ncols=True, mininterval=1.0)


def _fill(stream: _Interleaved, writer: _ShardWriter, cap: int | None, bar, stats: dict, started: float,
          source_tokens: list[int], on_shard=None, skip_first: int = 0) -> None:
    """Write the stream's documents until ``cap`` tokens (exactly: the last document is cut) or
    the end, adding to ``source_tokens`` (one count per source) what each source gave.
    ``on_shard(state_before_doc, tokens_of_doc_written)`` runs after each complete shard;
    ``skip_first`` drops the start of the first document (already written before a resume)."""
    while cap is None or writer.tokens < cap:
        before = stream.state() if on_shard else None
        stream.need(None if cap is None else cap - writer.tokens)
        tokens = stream.next()
        if tokens is None:
            break
        written = skip_first
        tokens, skip_first = tokens[skip_first:], 0
        if cap is not None:
            tokens = tokens[: cap - writer.tokens]
        # write shard by shard so a resume point is recorded at every shard boundary
        while len(tokens):
            room = writer.shard_tokens - (writer.tokens % writer.shard_tokens)
            part, tokens = tokens[:room], tokens[room:]
            completed = writer.write(part)
            written += len(part)
            source_tokens[stream.source] += len(part)
            bar.update(len(part))
            if completed and on_shard:
                on_shard(before, written)
        if bar.n and not bar.disable:
            bar.set_postfix_str(f"{stats['bytes'] / 1e6 / max(time.perf_counter() - started, 1e-9):.1f} MB/s", refresh=False)


def _lock(folder: Path):
    """An exclusive lock on the folder (released by the OS if the process dies), so two
    preparations of one folder (two nodes, two commands) never write at once."""
    import fcntl

    handle = open(folder / LOCK_NAME, "a")
    fcntl.flock(handle, fcntl.LOCK_EX)
    return handle


def default_workers() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def prepare_shards(
    train_sources: list,
    eval_sources: list,
    tokenizer,
    block_size: int,
    source_token_budget: int | None,
    max_eval_samples: int | None,
    out_dir: str | os.PathLike,
    workers: int | None = None,
    shard_tokens: int = DEFAULT_SHARD_TOKENS,
    progress: bool = False,
) -> PreparedShards:
    """Tokenize a recipe's data into prepared shards in ``out_dir`` (see the module docstring) and
    return them opened. A folder that already holds this data is returned as it is; one with a
    partial preparation of it is resumed; one holding other data raises :class:`ShardsError`.

    ``workers``: tokenizing processes (default: every CPU core this process may use; 1 tokenizes
    here). The output is the same for any number of workers."""
    train_sources = [Source.parse(s) for s in train_sources]
    eval_sources = [Source.parse(s) for s in eval_sources or []]
    workers = default_workers() if workers is None else int(workers)
    _check_inputs(train_sources, eval_sources, tokenizer, max_eval_samples, shard_tokens, workers)
    key = data_key(train_sources, eval_sources, tokenizer, block_size, source_token_budget, max_eval_samples)
    folder = Path(out_dir).expanduser()
    if (folder / INDEX_NAME).is_file():
        shards = PreparedShards(folder)
        shards.check_matches(key)
        return shards
    folder.mkdir(parents=True, exist_ok=True)
    with contextlib.closing(_lock(folder)):
        if (folder / INDEX_NAME).is_file():  # another process finished it while we waited for the lock
            return prepare_shards(train_sources, eval_sources, tokenizer, block_size, source_token_budget,
                                  max_eval_samples, folder, workers, shard_tokens, progress)
        state = _read_progress(folder, key, shard_tokens)
        with _tokenizing_pool(tokenizer, workers) as pool:
            job = _Job(folder, shard_tokens, pool, 2 * workers, progress)
            if state is None or state["eval"] is None:  # nothing yet, or killed before eval was complete
                state, train_stream = _write_eval(job, key, train_sources, eval_sources)
            else:
                train_stream = _Interleaved(train_sources, pool, job.window, job.stats, state["stream"])
            train_shards, train_counts = _write_train(job, state, train_stream, source_token_budget)
        _write_index(folder, key, train_sources, eval_sources, state, train_shards, train_counts)
    shards = PreparedShards(folder)
    shards.prepared_now, shards.seconds, shards.bytes_read = True, time.perf_counter() - job.started, job.stats["bytes"]
    return shards


def _check_inputs(train_sources: list[Source], eval_sources: list[Source], tokenizer, max_eval_samples: int | None,
                  shard_tokens: int, workers: int) -> None:
    if not train_sources:
        raise DataError("data.train_sources is empty: list at least one file, glob or Hub dataset id")
    for source in train_sources + eval_sources:
        if _looks_local(source.path) and not local_files(source.path):
            raise MissingInputError(f"data source '{source.path}': no such file (or the glob matches nothing)")
    if not eval_sources and max_eval_samples is None:
        raise DataError("with no data.eval_sources, data.max_eval_samples must be set (blocks to hold out)")
    if len(tokenizer) > np.iinfo(TOKEN_DTYPE).max + 1:
        raise DataError(f"the tokenizer has {len(tokenizer)} ids; token shards store uint16 ids (at most 65536)")
    if shard_tokens < 1:
        raise DataError(f"shard_tokens must be positive, got {shard_tokens}")
    if workers < 1:
        raise DataError(f"--workers must be at least 1, got {workers}")


@contextlib.contextmanager
def _tokenizing_pool(tokenizer, workers: int):
    """``workers`` processes that tokenize (``None`` with one: this process does it)."""
    if workers == 1:
        _init_worker(tokenizer)
        yield None
        return
    import multiprocessing as mp

    # fork where there is one: the workers inherit the loaded tokenizer instead of unpickling it
    method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
    pool = mp.get_context(method).Pool(workers, initializer=_init_worker, initargs=(tokenizer,))
    try:
        yield pool
    finally:
        pool.terminate()
        pool.join()


@dataclasses.dataclass
class _Job:
    """What every step of one preparation shares."""

    folder: Path
    shard_tokens: int
    pool: Any
    window: int  # chunks in flight
    progress: bool
    stats: dict = dataclasses.field(default_factory=lambda: {"bytes": 0})
    started: float = dataclasses.field(default_factory=time.perf_counter)


def _write_eval(job: _Job, key: dict, train_sources: list[Source], eval_sources: list[Source]) -> tuple[dict, _Interleaved]:
    """Write the eval shards; returns the progress state recorded after them and the train stream
    (which, with the eval split held out, has already given the eval documents)."""
    # recorded first, so eval shards a kill leaves behind are known to be ours
    _write_progress(job.folder, {"key": key, "shard_tokens": job.shard_tokens, "eval": None, "train": []})
    writer = _ShardWriter(job.folder, "eval", job.shard_tokens, [])
    counts = [0] * len(eval_sources or train_sources)
    if eval_sources:
        eval_stream = _Interleaved(eval_sources, job.pool, job.window, job.stats)
        train_stream = _Interleaved(train_sources, job.pool, job.window, job.stats)
    else:  # held out: the first documents of the train stream, cut at max_eval_tokens; the
        # rest of the last one is neither eval nor train (today's rule)
        eval_stream = train_stream = _Interleaved(train_sources, job.pool, job.window, job.stats)
    with contextlib.closing(_progress_bar("eval", key["max_eval_tokens"], job.progress)) as bar:
        _fill(eval_stream, writer, key["max_eval_tokens"], bar, job.stats, job.started, counts)
    writer.close()
    state = {"key": key, "shard_tokens": job.shard_tokens, "eval": writer.done, "train": [],
             "stream": train_stream.state(), "doc_offset": 0, "eval_source_tokens": counts,
             "train_source_tokens": [0] * len(train_sources)}
    _write_progress(job.folder, state)
    return state, train_stream


def _write_train(job: _Job, state: dict, stream: _Interleaved, budget: int | None) -> tuple[list[dict], list[int] | None]:
    """Write (or go on writing) the train shards, recording progress after each; returns them and
    the tokens each source gave (``None`` when a partial preparation by an older stentor-hub
    left no counts to go on from)."""
    writer = _ShardWriter(job.folder, "train", job.shard_tokens, state["train"])
    known = state.get("train_source_tokens") is not None
    counts = list(state.get("train_source_tokens") or [0] * len(stream.consumed))

    def on_shard(stream_before_doc: dict, doc_offset: int) -> None:
        # the counts include the part of the current document written so far, as the shards do
        _write_progress(job.folder, {**state, "train": writer.done, "stream": stream_before_doc, "doc_offset": doc_offset,
                                     "train_source_tokens": counts if known else None})

    with contextlib.closing(_progress_bar("train", budget, job.progress, writer.tokens)) as bar:
        _fill(stream, writer, budget, bar, job.stats, job.started, counts, on_shard, state["doc_offset"])
    writer.close()
    return writer.done, counts if known else None


def _write_index(folder: Path, key: dict, train_sources: list[Source], eval_sources: list[Source], state: dict,
                 train_shards: list[dict], train_counts: list[int] | None) -> None:
    """Write ``index.json`` (the folder becomes a usable dataset) and clear what the preparation
    kept on the way: the progress record, and what a killed run had begun (a shard, a progress
    record), ours in the folder we lock."""
    index = {
        "format_version": SHARD_FORMAT_VERSION,
        "dtype": "uint16",
        "tokenizer": key["tokenizer"],
        "key": key,
        "sources": {"train": [s.describe() for s in train_sources], "eval": [s.describe() for s in eval_sources]},
        "eval_held_out": not eval_sources,
        "splits": {split: {"tokens": sum(s["tokens"] for s in shards), "shards": shards, "source_tokens": counts}
                   for split, shards, counts in (("train", train_shards, train_counts),
                                                 ("eval", state["eval"], state.get("eval_source_tokens")))},
    }
    write_text_atomic(folder / INDEX_NAME, json.dumps(index, indent=1, default=str) + "\n")
    (folder / PROGRESS_NAME).unlink(missing_ok=True)
    for leftover in [*folder.glob(".*.bin.tmp"), *atomic_leftovers(folder / PROGRESS_NAME),
                     *atomic_leftovers(folder / INDEX_NAME)]:
        leftover.unlink(missing_ok=True)


def _read_progress(folder: Path, key: dict, shard_tokens: int) -> dict | None:
    path = folder / PROGRESS_NAME
    if not path.is_file():
        if any(folder.glob("*.bin")):
            raise ShardsError(f"{folder} holds .bin files but no {INDEX_NAME} or {PROGRESS_NAME}: not a preparation "
                              "this command can resume; choose another --out (nothing is deleted)")
        return None
    state = json.loads(path.read_text())
    if key_digest(state["key"]) != key_digest(key):
        raise ShardsError(f"{folder} holds a partial preparation of other data settings; choose another --out, or "
                          f"delete {folder} to start over")
    if state["shard_tokens"] != shard_tokens:
        raise ShardsError(f"{folder}: the partial preparation there uses shards of {state['shard_tokens']} tokens, not "
                          f"{shard_tokens}; resume with the same shard size")
    for shard in (state["eval"] or []) + state["train"]:
        if not (folder / shard["file"]).is_file():
            raise ShardsError(f"{folder / shard['file']} is missing: the partial preparation cannot be resumed; "
                              f"delete {folder} to start over")
    return state


def _write_progress(folder: Path, state: dict) -> None:
    write_text_atomic(folder / PROGRESS_NAME, json.dumps(state, default=str) + "\n")


# -- the recipe's view: where the shards are, preparing or waiting ---------------------------------


def recipe_sources(data_cfg: dict) -> tuple[list[Source], list[Source]]:
    return ([Source.parse(s) for s in data_cfg.get("train_sources") or []],
            [Source.parse(s) for s in data_cfg.get("eval_sources") or []])


def shards_folder(data_cfg: dict, key: dict) -> Path:
    """``data.shards_dir`` when set, else the token cache folder named by the data's hash."""
    if data_cfg.get("shards_dir"):
        return Path(str(data_cfg["shards_dir"])).expanduser()
    cache = Path(data_cfg["cache_dir"]).expanduser() if data_cfg.get("cache_dir") else default_cache_dir()
    return cache / key_digest(key)


def prepare_recipe_data(config: dict, tokenizer, workers: int | None = None, out_dir: str | os.PathLike | None = None,
                        shard_tokens: int = DEFAULT_SHARD_TOKENS, progress: bool = False) -> PreparedShards:
    """Prepared shards of a recipe's ``data`` section (prepared now if missing)."""
    data_cfg = config["data"]
    train_sources, eval_sources = recipe_sources(data_cfg)
    key = data_key(train_sources, eval_sources, tokenizer, data_cfg["block_size"], data_cfg.get("source_token_budget"),
                   data_cfg.get("max_eval_samples"))
    folder = Path(out_dir).expanduser() if out_dir else shards_folder(data_cfg, key)
    return prepare_shards(train_sources, eval_sources, tokenizer, data_cfg["block_size"],
                          data_cfg.get("source_token_budget"), data_cfg.get("max_eval_samples"), folder,
                          workers=workers, shard_tokens=shard_tokens, progress=progress)


def wait_for_shards(config: dict, tokenizer, poll_seconds: float = 1.0) -> PreparedShards:
    """For the processes that do not prepare: wait (no collective call, so no timeout) until the
    preparing process has written the index, then open the shards."""
    data_cfg = config["data"]
    train_sources, eval_sources = recipe_sources(data_cfg)
    key = data_key(train_sources, eval_sources, tokenizer, data_cfg["block_size"], data_cfg.get("source_token_budget"),
                   data_cfg.get("max_eval_samples"))
    folder = shards_folder(data_cfg, key)
    while not (folder / INDEX_NAME).is_file():
        time.sleep(poll_seconds)
    shards = PreparedShards(folder)
    shards.check_matches(key)
    return shards
