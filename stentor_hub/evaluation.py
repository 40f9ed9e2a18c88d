"""Evaluation: BLiMP accuracy and validation perplexity, the two headline numbers of a model card.

BLiMP is scored exactly as lm-evaluation-harness (0.4.x) scores its ``blimp`` tasks with the
``hf`` model, so the numbers compare with what it reports for other models:

* each task is a 0-shot ``multiple_choice`` task with ``doc_to_text: ""`` and the two choices
  ``[sentence_good, sentence_bad]``; with the default target delimiter the scored continuation is
  ``" " + sentence``;
* the context is empty, so lm-eval conditions on one *prefix token*: the tokenizer's BOS if it
  has one, else its EOS (``HFLM.prefix_token_id``). The continuation is tokenized on its own,
  without special tokens (``tok_encode(continuation, add_special_tokens=False)``); if it happens
  to start with the prefix token, that token becomes the context instead;
* a sentence's score is the sum of ``log_softmax`` (over all model outputs) of its continuation
  tokens; a pair is correct when ``score(good) >= score(bad)`` (``np.argmax`` picks the first
  choice on ties); a task's accuracy is the fraction of correct pairs and the overall score is
  the unweighted mean of the task accuracies (``weight_by_size: False``).

Stentor tokenizers have ``<s>`` (BOS, 8001), so the lm-eval rule conditions on ``<s>`` even though
Stentor2 saw ``</s>`` between documents and never ``<s>``: that is what lm-eval reports, so it is
the default; ``prefix_token_id`` (lm-eval's model argument of the same name) overrides it.

Perplexity is the training recipe's ``eval_loss`` computed outside the Trainer: the text is cut
into blocks by :func:`stentor_hub.recipes.data.build_eval_blocks` (same cleaning, EOS handling
and packing as training) and the loss is the mean next-token cross-entropy over every predicted
position of those blocks.

``blimp_results.json`` (written by :func:`run_blimp` / ``stentor-hub eval blimp``; read by the
publisher; keep it stable)::

    {"overall": 71.3,                       # percent, unweighted mean of task accuracies
     "tasks": {"adjunct_island": {"correct": 712, "total": 1000, "accuracy": 71.2,
                                  "field": "syntax", "linguistics_term": "island_effects"}, ...},
     "model": "path or Hub id", "scoring": "how the numbers were computed, in words",
     "prefix_token_id": 8001, "num_tasks": 67, "num_pairs": 67000, "complete": true,
     "limit": null, "dtype": "float32", "device": "cpu", "seconds": 812.4, "stentor_hub": "0.1.0"}
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Sequence

from stentor_hub.errors import EvaluationError, MissingInputError
from stentor_hub.helpers import check_output_file, looks_like_hub_id, read_jsonl, write_json_atomic
from stentor_hub.run_dir import RunDir, tokenizer_folder

if TYPE_CHECKING:  # the CLI imports this module for --help; torch loads only when used
    import torch

BLIMP_HUB_DATASET = "nyu-mll/blimp"

# The 67 BLiMP paradigms (the Hub dataset's configs, lm-eval's blimp_* tasks, the jsonl file names).
BLIMP_TASKS = (
    "adjunct_island", "anaphor_gender_agreement", "anaphor_number_agreement",
    "animate_subject_passive", "animate_subject_trans", "causative", "complex_NP_island",
    "coordinate_structure_constraint_complex_left_branch",
    "coordinate_structure_constraint_object_extraction", "determiner_noun_agreement_1",
    "determiner_noun_agreement_2", "determiner_noun_agreement_irregular_1",
    "determiner_noun_agreement_irregular_2", "determiner_noun_agreement_with_adj_2",
    "determiner_noun_agreement_with_adj_irregular_1", "determiner_noun_agreement_with_adj_irregular_2",
    "determiner_noun_agreement_with_adjective_1", "distractor_agreement_relational_noun",
    "distractor_agreement_relative_clause", "drop_argument", "ellipsis_n_bar_1", "ellipsis_n_bar_2",
    "existential_there_object_raising", "existential_there_quantifiers_1",
    "existential_there_quantifiers_2", "existential_there_subject_raising",
    "expletive_it_object_raising", "inchoative", "intransitive", "irregular_past_participle_adjectives",
    "irregular_past_participle_verbs", "irregular_plural_subject_verb_agreement_1",
    "irregular_plural_subject_verb_agreement_2", "left_branch_island_echo_question",
    "left_branch_island_simple_question", "matrix_question_npi_licensor_present", "npi_present_1",
    "npi_present_2", "only_npi_licensor_present", "only_npi_scope", "passive_1", "passive_2",
    "principle_A_c_command", "principle_A_case_1", "principle_A_case_2", "principle_A_domain_1",
    "principle_A_domain_2", "principle_A_domain_3", "principle_A_reconstruction",
    "regular_plural_subject_verb_agreement_1", "regular_plural_subject_verb_agreement_2",
    "sentential_negation_npi_licensor_present", "sentential_negation_npi_scope",
    "sentential_subject_island", "superlative_quantifiers_1", "superlative_quantifiers_2",
    "tough_vs_raising_1", "tough_vs_raising_2", "transitive", "wh_island", "wh_questions_object_gap",
    "wh_questions_subject_gap", "wh_questions_subject_gap_long_distance", "wh_vs_that_no_gap",
    "wh_vs_that_no_gap_long_distance", "wh_vs_that_with_gap", "wh_vs_that_with_gap_long_distance",
)

_BLIMP_REQUIRED_KEYS = ("sentence_good", "sentence_bad")
DEFAULT_BATCH_SIZE = 64


# --------------------------------------------------------------------------------------------
# BLiMP data


@dataclass(frozen=True)
class BlimpPair:
    """One minimal pair of a BLiMP task."""

    uid: str
    pair_id: str
    good: str
    bad: str
    field: str
    linguistics_term: str


def load_blimp(
    data: str | os.PathLike, tasks: Sequence[str] | None = None, limit: int | None = None
) -> dict[str, list[BlimpPair]]:
    """Read BLiMP pairs, task by task (``{UID: [BlimpPair, ...]}``, tasks in sorted order).

    Args:
        data: a folder of the original ``UID.jsonl`` files, one ``.jsonl`` file (one task), or the
            Hub dataset id ``nyu-mll/blimp``.
        tasks: UIDs to keep (default: every task found). An unknown UID is an error.
        limit: keep the first ``limit`` pairs of each task (lm-eval's ``--limit``).

    Raises:
        FileNotFoundError: ``data`` is neither a local folder/file nor a Hub dataset id.
        ValueError: a malformed line (names the file and line), an unknown task, a bad ``limit``.
    """
    if limit is not None and limit < 1:
        raise EvaluationError(f"limit must be a positive number of pairs per task, got {limit}")
    path = Path(data).expanduser()
    if path.is_dir():
        files = {f.stem: f for f in sorted(path.glob("*.jsonl"))}
        if not files:
            raise MissingInputError(f"no BLiMP *.jsonl files in {path}; pass the folder that holds UID.jsonl files")
    elif path.is_file():
        files = {path.stem: path}
    elif looks_like_hub_id(data):
        return _load_blimp_hub(str(data), _select_tasks(BLIMP_TASKS, tasks, str(data)), limit)
    else:
        raise MissingInputError(
            f"BLiMP data not found: {data} is not a folder of *.jsonl files, a .jsonl file, or a Hub "
            f"dataset id (such as {BLIMP_HUB_DATASET})"
        )
    selected = _select_tasks(sorted(files), tasks, str(path))
    return {uid: _read_blimp_jsonl(files[uid], uid, limit) for uid in selected}


def _select_tasks(available: Sequence[str], tasks: Sequence[str] | None, where: str) -> list[str]:
    if tasks is None:
        return list(available)
    unknown = [t for t in tasks if t not in available]
    if unknown:
        raise EvaluationError(
            f"unknown BLiMP task(s) {', '.join(unknown)} in {where}; available: {', '.join(available)}"
        )
    return sorted(dict.fromkeys(tasks))


def _read_blimp_jsonl(file: Path, uid: str, limit: int | None) -> list[BlimpPair]:
    pairs = []
    for line_no, record in read_jsonl(file, EvaluationError):
        if limit is not None and len(pairs) >= limit:
            break
        pairs.append(_blimp_pair(record, uid, len(pairs), f"{file}:{line_no}"))
    if not pairs:
        raise EvaluationError(f"{file}: no BLiMP pairs in the file")
    return pairs


def _blimp_pair(record: Any, uid: str, index: int, where: str) -> BlimpPair:
    if not isinstance(record, dict):
        raise EvaluationError(f"{where}: expected a JSON object with sentence_good and sentence_bad, got {type(record).__name__}")
    for key in _BLIMP_REQUIRED_KEYS:
        value = record.get(key)
        if not isinstance(value, str) or not value.strip():
            problem = "is missing" if key not in record else "is not a non-empty string"
            raise EvaluationError(f"{where}: '{key}' {problem}; every BLiMP line needs sentence_good and sentence_bad")
    return BlimpPair(
        uid=uid,
        pair_id=str(record.get("pairID", index)),
        good=record["sentence_good"],
        bad=record["sentence_bad"],
        field=str(record.get("field", "")),
        linguistics_term=str(record.get("linguistics_term", "")),
    )


def _load_blimp_hub(dataset_id: str, tasks: list[str], limit: int | None) -> dict[str, list[BlimpPair]]:
    from datasets import load_dataset

    result = {}
    for uid in tasks:
        try:
            rows = load_dataset(dataset_id, uid, split="train")
        except Exception as e:  # offline, unknown id, missing config: one actionable message
            raise MissingInputError(
                f"{dataset_id} is not a local folder or file, and loading BLiMP task '{uid}' from the Hub dataset "
                f"{dataset_id} failed ({type(e).__name__}: {e}); pass a local folder of BLiMP *.jsonl files with --data"
            ) from None
        if limit is not None:
            rows = rows.select(range(min(limit, len(rows))))
        result[uid] = [_blimp_pair(r, uid, i, f"{dataset_id}/{uid} row {i}") for i, r in enumerate(rows)]
    return result


# --------------------------------------------------------------------------------------------
# Scoring continuations


def blimp_prefix_token_id(tokenizer, prefix_token_id: int | None = None) -> int:
    """The context token lm-eval uses for an empty context: the tokenizer's BOS, else its EOS."""
    if prefix_token_id is not None:
        return int(prefix_token_id)
    if tokenizer.bos_token_id is not None:
        return int(tokenizer.bos_token_id)
    if tokenizer.eos_token_id is not None:
        return int(tokenizer.eos_token_id)
    raise EvaluationError("the tokenizer has neither a BOS nor an EOS token; pass prefix_token_id")


def continuation_requests(
    tokenizer, continuations: Iterable[str], prefix_token_id: int
) -> list[tuple[list[int], list[int]]]:
    """``(context_ids, continuation_ids)`` for continuations scored after an empty context, as
    lm-eval's ``TemplateLM.loglikelihood`` builds them."""
    requests = []
    for text in continuations:
        ids = tokenizer.encode(text, add_special_tokens=False)
        if not ids:
            raise EvaluationError(f"the continuation {text!r} encodes to no tokens")
        if ids[0] == prefix_token_id:
            requests.append((ids[:1], ids[1:]))
        else:
            requests.append(([prefix_token_id], ids))
    return requests


def score_requests(
    model,
    requests: Sequence[tuple[Sequence[int], Sequence[int]]],
    batch_size: int = DEFAULT_BATCH_SIZE,
    progress: bool = False,
    desc: str = "scoring",
) -> list[float]:
    """Summed log-probability of each continuation given its context, in request order.

    Requests are deduplicated and run longest first (lm-eval's order), right-padded, with an
    attention mask and explicit position ids ``0..n-1``: a token only attends to the tokens before
    it, so padding after a sequence cannot change it, and a sequence scores the same in any batch
    (up to float rounding of differently shaped matrix products). Sequences longer than the
    model's window are left-truncated as lm-eval does."""
    import torch

    if batch_size < 1:
        raise EvaluationError(f"batch_size must be at least 1, got {batch_size}")
    max_length = _model_max_length(model)
    device = next(model.parameters()).device
    pad_id = 0  # any id: padded positions are masked out and never scored

    # Identical (context, continuation) token sequences are scored once.
    unique: dict[tuple[tuple[int, ...], tuple[int, ...]], int] = {}
    for context, continuation in requests:
        if not context or not continuation:
            raise EvaluationError("every request needs at least one context and one continuation token")
        if len(continuation) > max_length:
            raise EvaluationError(f"a continuation of {len(continuation)} tokens does not fit the model's window of {max_length}")
        unique.setdefault((tuple(context), tuple(continuation)), len(unique))
    keys = sorted(unique, key=lambda k: (-(len(k[0]) + len(k[1])), k[0] + k[1]))
    scores = [0.0] * len(unique)

    with _scoring(model, len(keys), progress, desc) as bar:
        for start in range(0, len(keys), batch_size):
            batch = keys[start : start + batch_size]
            # input = (context + continuation)[-(max_length + 1):][:-1]; the model's output at
            # position i predicts token i + 1, so the continuation is scored by the last
            # len(continuation) outputs of each row.
            inputs = [(ctx + cont)[-(max_length + 1) :][:-1] for ctx, cont in batch]
            width = max(len(x) for x in inputs)
            input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
            attention_mask = torch.zeros((len(batch), width), dtype=torch.long)
            for row, ids in enumerate(inputs):
                input_ids[row, : len(ids)] = torch.tensor(ids)
                attention_mask[row, : len(ids)] = 1
            position_ids = torch.arange(width).expand(len(batch), width)
            logits = model(
                input_ids=input_ids.to(device),
                attention_mask=attention_mask.to(device),
                position_ids=position_ids.to(device),
                use_cache=False,  # one pass per sequence: a KV cache would only cost time
            ).logits
            logprobs = torch.log_softmax(logits.float(), dim=-1)
            for row, ((ctx, cont), ids) in enumerate(zip(batch, inputs)):
                positions = slice(len(ids) - len(cont), len(ids))
                targets = torch.tensor(cont, device=logprobs.device)
                token_logprobs = logprobs[row, positions].gather(-1, targets[:, None])
                scores[unique[(ctx, cont)]] = float(token_logprobs.sum())
            bar.update(len(batch))
    return [scores[unique[(tuple(c), tuple(t))]] for c, t in requests]


def _model_name(model, model_name: str | None) -> str:
    return model_name or getattr(model, "name_or_path", "") or type(model).__name__


def _run_facts(model, started: float) -> dict:
    """How an evaluation ran: the weights' dtype and device, and the seconds since ``started``."""
    param = next(model.parameters())
    return {"dtype": str(param.dtype).removeprefix("torch."), "device": str(param.device),
            "seconds": round(time.perf_counter() - started, 3)}


@contextlib.contextmanager
def _scoring(model, total: int, progress: bool, desc: str):
    """Evaluation mode without autograd and a progress bar for the block; the model's training
    mode is restored afterwards."""
    import torch

    was_training = model.training
    model.eval()
    bar = _progress_bar(total=total, enabled=progress, desc=desc)
    try:
        with torch.inference_mode():
            yield bar
    finally:
        bar.close()
        model.train(was_training)


def _model_max_length(model) -> int:
    config = model.config
    for attr in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        value = getattr(config, attr, None)
        if isinstance(value, int) and value > 0:
            return value
    return 2048  # lm-eval's default when the config names no window


def _progress_bar(total: int, enabled: bool, desc: str):
    from tqdm.auto import tqdm

    return tqdm(total=total, disable=not enabled, desc=desc, unit="seq", dynamic_ncols=True)


def sentence_loglikelihoods(
    model,
    tokenizer,
    sentences: Sequence[str],
    prefix_token_id: int | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    progress: bool = False,
) -> list[float]:
    """log P(" " + sentence | prefix token) for each sentence, as lm-eval scores a BLiMP choice."""
    prefix = blimp_prefix_token_id(tokenizer, prefix_token_id)
    requests = continuation_requests(tokenizer, [" " + s for s in sentences], prefix)
    return score_requests(model, requests, batch_size=batch_size, progress=progress, desc="BLiMP")


# --------------------------------------------------------------------------------------------
# BLiMP


def blimp_loglikelihoods(
    model,
    tokenizer,
    pairs: dict[str, list[BlimpPair]],
    prefix_token_id: int | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    progress: bool = False,
) -> dict[str, list[tuple[float, float]]]:
    """``{UID: [(loglik_good, loglik_bad), ...]}`` for pairs as read by :func:`load_blimp`."""
    sentences = [s for task in pairs.values() for p in task for s in (p.good, p.bad)]
    scores = sentence_loglikelihoods(model, tokenizer, sentences, prefix_token_id, batch_size, progress)
    result, i = {}, 0
    for uid, task in pairs.items():
        result[uid] = [(scores[i + 2 * k], scores[i + 2 * k + 1]) for k in range(len(task))]
        i += 2 * len(task)
    return result


def blimp_task_results(
    pairs: dict[str, list[BlimpPair]], loglikelihoods: dict[str, list[tuple[float, float]]]
) -> dict[str, dict]:
    """The ``"tasks"`` of ``blimp_results.json`` from per-pair log-likelihoods: a pair is correct
    when ``good >= bad`` (lm-eval's ``argmax`` picks the first choice, the good one, on a tie)."""
    results = {}
    for uid, task_pairs in pairs.items():
        correct = sum(good >= bad for good, bad in loglikelihoods[uid])
        results[uid] = {
            "correct": correct,
            "total": len(task_pairs),
            "accuracy": 100.0 * correct / len(task_pairs),
            "field": task_pairs[0].field,
            "linguistics_term": task_pairs[0].linguistics_term,
        }
    return results


def evaluate_blimp(
    model,
    tokenizer,
    data: str | os.PathLike | dict[str, list[BlimpPair]],
    tasks: Sequence[str] | None = None,
    limit: int | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    prefix_token_id: int | None = None,
    progress: bool = True,
    model_name: str | None = None,
) -> dict:
    """BLiMP accuracy of a loaded causal LM, as lm-evaluation-harness's ``blimp`` group scores it.

    Args:
        model: a ``transformers`` causal LM (evaluated on the device it is on).
        tokenizer: its tokenizer.
        data: a folder of BLiMP ``*.jsonl`` files, the Hub id ``nyu-mll/blimp``, or pairs already
            read by :func:`load_blimp`.
        tasks, limit: see :func:`load_blimp` (ignored when ``data`` holds pairs).
        batch_size: sequences per forward pass; results do not depend on it.
        prefix_token_id: the context token (default: BOS if the tokenizer has one, else EOS).
        progress: show a progress bar.
        model_name: what to record as ``"model"`` (default: ``model.name_or_path``).

    Returns:
        The ``blimp_results.json`` dict (see the module docstring).
    """
    started = time.perf_counter()
    pairs = data if isinstance(data, dict) else load_blimp(data, tasks=tasks, limit=limit)
    prefix = blimp_prefix_token_id(tokenizer, prefix_token_id)
    loglikelihoods = blimp_loglikelihoods(model, tokenizer, pairs, prefix, batch_size, progress)
    task_results = blimp_task_results(pairs, loglikelihoods)
    overall = sum(t["accuracy"] for t in task_results.values()) / len(task_results)
    prefix_token = tokenizer.convert_ids_to_tokens(prefix)
    from stentor_hub import __version__

    return {
        "overall": overall,
        "tasks": task_results,
        "model": _model_name(model, model_name),
        "scoring": (
            "lm-evaluation-harness blimp (0-shot multiple_choice, metric acc): each sentence scores "
            "the sum of log_softmax of the tokens of ' ' + sentence (tokenized alone, no special tokens) "
            f"given the single context token {prefix} ({prefix_token}, lm-eval's prefix token: BOS if the "
            "tokenizer has one, else EOS, unless overridden); a pair is correct when score(good) >= "
            "score(bad); overall = unweighted mean of the per-task accuracies"
        ),
        "prefix_token_id": prefix,
        "num_tasks": len(task_results),
        "num_pairs": sum(t["total"] for t in task_results.values()),
        "complete": set(task_results) == set(BLIMP_TASKS) and all(t["total"] == 1000 for t in task_results.values()),
        "limit": limit,
        **_run_facts(model, started),
        "stentor_hub": __version__,
    }


# --------------------------------------------------------------------------------------------
# Perplexity


def evaluate_perplexity(
    model,
    tokenizer,
    data: str | os.PathLike,
    block_size: int,
    max_samples: int | None = None,
    batch_size: int = 8,
    progress: bool = False,
    model_name: str | None = None,
) -> dict:
    """Mean next-token loss and perplexity of ``model`` on ``data``, defined as the training
    recipe's ``eval_loss``: blocks from :func:`stentor_hub.recipes.data.build_eval_blocks`
    (cleaned documents, EOS after each, packed into full blocks), loss averaged over every
    predicted position (``block_size - 1`` per block).

    Args:
        data: a text file, a glob, a Hub dataset id, or a data source mapping as in the recipe
            YAML (``{"path": ..., "max_chars": ...}``), or a prepared-shards folder (its eval
            split: the training run's own eval tokens); see ``build_eval_blocks``.
        block_size: tokens per block; use the training run's ``block_size`` for agreement.
        max_samples: use only the first ``max_samples`` blocks (the recipe's ``max_eval_samples``).
        batch_size: blocks per forward pass.

    Returns:
        ``{"eval_loss", "eval_ppl", "tokens" (predicted), "blocks", "block_size", "max_samples",
        "data" (the source: path, kind, max_chars), "model", "dtype", "device", "seconds"}``.
    """
    import torch

    from stentor_hub.recipes.data import Source, build_eval_blocks

    if block_size < 2:
        raise EvaluationError(f"block_size must be at least 2 tokens, got {block_size}")
    if block_size > _model_max_length(model):
        raise EvaluationError(f"block_size {block_size} is longer than the model's window of {_model_max_length(model)}; pass a smaller --block-size")
    started = time.perf_counter()
    blocks = build_eval_blocks(data, tokenizer, block_size, max_samples=max_samples)
    device = next(model.parameters()).device
    total_loss = 0.0  # summed in float64 over all predicted tokens
    with _scoring(model, len(blocks), progress, "perplexity") as bar:
        for start in range(0, len(blocks), batch_size):
            batch = blocks[start : start + batch_size].to(device)
            logits = model(input_ids=batch, use_cache=False).logits.float()
            loss = torch.nn.functional.cross_entropy(
                logits[:, :-1].reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1), reduction="sum"
            )
            total_loss += float(loss.double())
            bar.update(len(batch))
    tokens = len(blocks) * (block_size - 1)
    mean_loss = total_loss / tokens
    return {
        "eval_loss": mean_loss,
        "eval_ppl": math.exp(mean_loss),
        "tokens": tokens,
        "blocks": len(blocks),
        "block_size": block_size,
        "max_samples": max_samples,
        "data": Source.parse(data).describe(),
        "model": _model_name(model, model_name),
        **_run_facts(model, started),
    }


# --------------------------------------------------------------------------------------------
# Loading a model folder or Hub id, writing results


def load_model_and_tokenizer(
    model: str | os.PathLike, tokenizer: str | os.PathLike | None = None, device: str | None = None, dtype: str = "float32"
):
    """Load ``(model, tokenizer)`` from a local folder or a Hub id (``trust_remote_code=True``).

    The tokenizer comes from ``tokenizer`` if given, else from the model folder (a checkpoint of a
    run written before checkpoints carried their tokenizer: ``RUN_DIR/tokenizer``; see
    :func:`stentor_hub.run_dir.tokenizer_folder`).
    ``device``: ``cpu`` or ``cuda`` (default: cuda when available). ``dtype``: ``float32``,
    ``bfloat16``, ``float16`` or ``auto`` (as saved)."""
    import torch
    from transformers import AutoModelForCausalLM

    from stentor_hub.tokenizer import load_tokenizer

    path = Path(model).expanduser()
    if path.is_dir() and not (path / "config.json").is_file():
        if (path / "final" / "config.json").is_file():
            raise MissingInputError(f"{path} is a training run folder; pass {path / 'final'} or {path / 'best'}")
        raise MissingInputError(f"{path} has no config.json; pass a model folder (with config.json and weights) or a Hub id")
    if not path.exists() and not looks_like_hub_id(model):
        raise MissingInputError(f"model not found: {model} is neither a local folder nor a Hub id (owner/name)")
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise EvaluationError("--device cuda was asked for but torch sees no CUDA GPU; use --device cpu")
    dtypes = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16, "auto": "auto"}
    if dtype not in dtypes:
        raise EvaluationError(f"unknown dtype {dtype!r}; choose one of {', '.join(dtypes)}")

    if tokenizer is None:
        tokenizer = tokenizer_folder(path) if path.is_dir() else model
        if tokenizer is None:
            raise MissingInputError(f"{path} has no tokenizer files and no ../tokenizer folder beside it; pass --tokenizer")
    try:  # a Hub id that does not exist, no network, unreadable files: transformers says which (OSError)
        loaded = AutoModelForCausalLM.from_pretrained(str(model), trust_remote_code=True, dtype=dtypes[dtype])
        loaded_tokenizer = load_tokenizer(tokenizer)
    except OSError as e:
        raise MissingInputError(f"cannot load {model}: {e}") from None
    return loaded.to(device).eval(), loaded_tokenizer


# what an existing --out file must hold to be taken for an earlier result and replaced
BLIMP_RESULT_KEYS = ("overall", "tasks", "scoring")
PERPLEXITY_RESULT_KEYS = ("eval_loss", "eval_ppl", "tokens")


def run_blimp(
    model: str | os.PathLike,
    data: str | os.PathLike,
    out: str | os.PathLike | None = None,
    tasks: Sequence[str] | None = None,
    limit: int | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    device: str | None = None,
    dtype: str = "float32",
    tokenizer: str | os.PathLike | None = None,
    prefix_token_id: int | None = None,
    progress: bool = True,
) -> dict:
    """:func:`evaluate_blimp` for a model folder or Hub id; writes ``out`` (``blimp_results.json``)
    if given. The data is read before the model is loaded, so bad data fails fast."""
    if out is not None:  # before the evaluation, not after it: a bad --out must not lose an hour of scoring
        check_output_file(out, "--out", EvaluationError, replaces=BLIMP_RESULT_KEYS)
    pairs = load_blimp(data, tasks=tasks, limit=limit)
    loaded, tok = load_model_and_tokenizer(model, tokenizer=tokenizer, device=device, dtype=dtype)
    results = evaluate_blimp(
        loaded, tok, pairs, batch_size=batch_size, prefix_token_id=prefix_token_id, progress=progress, model_name=str(model)
    )
    results["limit"] = limit
    if out is not None:
        write_json_atomic(results, out)
    return results


def default_block_size(model: str | os.PathLike) -> int | None:
    """The ``block_size`` of the training run a checkpoint folder belongs to
    (``RUN_DIR/run_manifest.json`` beside ``RUN_DIR/final``), if there is one."""
    run = RunDir.of_checkpoint(model)
    return None if run is None else run.block_size()


def run_perplexity(
    model: str | os.PathLike,
    data: str | os.PathLike,
    out: str | os.PathLike | None = None,
    block_size: int | None = None,
    max_samples: int | None = None,
    batch_size: int = 8,
    device: str | None = None,
    dtype: str = "float32",
    tokenizer: str | os.PathLike | None = None,
    progress: bool = True,
) -> dict:
    """:func:`evaluate_perplexity` for a model folder or Hub id; writes ``out`` if given.
    ``data`` is a path, glob or Hub id, or a source mapping as in the recipe YAML;
    ``block_size`` defaults to the training run's (from its manifest), else the model's window."""
    if out is not None:
        check_output_file(out, "--out", EvaluationError, replaces=PERPLEXITY_RESULT_KEYS)
    loaded, tok = load_model_and_tokenizer(model, tokenizer=tokenizer, device=device, dtype=dtype)
    if block_size is None:
        block_size = default_block_size(model) or _model_max_length(loaded)
    results = evaluate_perplexity(
        loaded, tok, data, block_size=block_size, max_samples=max_samples, batch_size=batch_size,
        progress=progress, model_name=str(model),
    )
    if out is not None:
        write_json_atomic(results, out)
    return results
