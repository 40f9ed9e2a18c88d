"""The model card, rendered from facts.

:class:`ModelCardFacts` gathers what a training run wrote (``config.json``, ``run_manifest.json``,
``training_curves.csv``: see :mod:`stentor_hub.run_dir`), the BLiMP results when given, and the author's card config (metadata and
prose). Jinja templates in ``cards/`` only lay the facts out. The same inputs render to the same
bytes: nothing here reads the clock, and the curves plot is a deterministic SVG.

    facts = ModelCardFacts.from_run("runs/30m", blimp="blimp_results.json", card_config="card.yaml")
    Path("README.md").write_text(render_card(facts))
"""

from __future__ import annotations

import io
import json
import math
import os
import re
import types
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from stentor_hub._resources import resource_dir
from stentor_hub.errors import CardError, MissingInputError
from stentor_hub.helpers import looks_like_hub_id, read_json, read_yaml_mapping, write_text_atomic
from stentor_hub.run_dir import MANIFEST_FILE, CurvePoint, RunDir, RunManifest

CARD_TEMPLATE = "model_card.md.j2"
BLIMP_DESCRIPTIONS = "blimp_tasks.yaml"
DEFAULT_CARD_CONFIG = "card_config.yaml"
# The author's prose, in the order the card shows it. Anything else in the card config is an error.
PROSE_SECTIONS = ("summary", "intended_uses", "limitations", "sample_outputs", "notices", "citation")
# prose the card's own sections take in (the others become sections of their own)
MERGED_PROSE = ("summary", "sample_outputs", "citation")
METADATA_KEYS = ("model_name", "license", "language", "library_name", "pipeline_tag", "tags", "datasets", "widget",
                 "base_model", "eval_dataset")
# settings of the card (see cards/card_config.yaml for each)
SETTING_KEYS = ("project_url", "authors", "citation_key", "generation", "sample_prompts", "sample_seed",
                "speculative_target", "power_watts", "grid_intensity", "geographical_location", "co2_source",
                "training_type")
GENERATION_KEYS = ("do_sample", "temperature", "top_p", "top_k", "repetition_penalty", "max_new_tokens")
# where an author's section goes when it does not say: (before, after) a section of the card, by the
# kind of section the Hugging Face model-card template has (a title normalised by _section_key)
_BEFORE_ARCHITECTURE = ("Architecture", None)
_AT_THE_END = (None, "Citation")
HF_TEMPLATE_PLACES = {
    **dict.fromkeys(("uses", "intended_uses", "direct_use", "downstream_use", "out_of_scope_use",
                     "bias_risks_and_limitations", "limitations", "risks", "recommendations", "notices"),
                    _BEFORE_ARCHITECTURE),
    **dict.fromkeys(("related_work", "acknowledgements", "acknowledgments"), ("Citation", None)),
    **dict.fromkeys(("glossary", "more_information", "model_card_authors", "model_card_contact", "contact"),
                    _AT_THE_END),
}
DEFAULT_PLACE = ("Citation", None)
BLIMP_STRONG, BLIMP_WEAK = 85.0, 55.0  # percent: >= strong, <= weak, moderate in between


# --- facts -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ParameterGroup:
    name: str
    count: int
    share: float  # percent of the total


def parameter_breakdown(config: dict) -> list[ParameterGroup]:
    """Parameters of a Llama model by group, computed from its ``config.json``; tied input and
    output embeddings count once. The last entry is the total."""
    try:
        hidden, vocab, layers = config["hidden_size"], config["vocab_size"], config["num_hidden_layers"]
        inter, heads = config["intermediate_size"], config["num_attention_heads"]
    except KeyError as e:
        raise CardError(f"config.json has no {e.args[0]!r}; it must be a LlamaForCausalLM config") from None
    kv_heads = config.get("num_key_value_heads") or heads
    head_dim = config.get("head_dim") or hidden // heads
    attn_bias, mlp_bias = bool(config.get("attention_bias")), bool(config.get("mlp_bias"))
    q_out, kv_out = heads * head_dim, kv_heads * head_dim
    attention = hidden * q_out + 2 * hidden * kv_out + q_out * hidden
    if attn_bias:
        attention += q_out + 2 * kv_out + hidden
    mlp = 3 * hidden * inter + ((2 * inter + hidden) if mlp_bias else 0)
    groups = [
        ("embedding (tied with the output layer)" if config.get("tie_word_embeddings", True) else "embedding", vocab * hidden),
        (f"attention ({layers} layers)", layers * attention),
        (f"MLP ({layers} layers)", layers * mlp),
        (f"norms ({2 * layers} RMSNorm)", layers * 2 * hidden),
        ("final norm", hidden),
    ]
    if not config.get("tie_word_embeddings", True):
        groups.append(("output layer (lm_head)", vocab * hidden))
    total = sum(count for _, count in groups)
    return [ParameterGroup(name, count, 100.0 * count / total) for name, count in groups] + [
        ParameterGroup("total", total, 100.0)
    ]


@dataclass(frozen=True)
class ResultRow:
    point: CurvePoint
    labels: tuple[str, ...]  # why the row is shown: first, best, epoch end, final


def select_result_rows(curves: list[CurvePoint], best_step: int | None, final_step: int | None,
                       selected: int = 6) -> list[ResultRow]:
    """The evaluated steps the results table shows: the first, about ``selected`` evenly spaced
    ones, each epoch end, the best (from the manifest) and the final step."""
    # the Trainer logs train and eval loss of one step on separate rows: show them on one
    train_at = {p.step: p.train_loss for p in curves if p.train_loss is not None}
    evaluated = [p if p.train_loss is not None else replace(p, train_loss=train_at.get(p.step))
                 for p in curves if p.eval_loss is not None]
    labels: dict[int, list[str]] = {}

    def mark(point: CurvePoint, label: str | None) -> None:
        labels.setdefault(point.step, [])
        if label and label not in labels[point.step]:
            labels[point.step].append(label)

    mark(evaluated[0], "first eval")
    stride = max(1, math.ceil(len(evaluated) / selected))
    for point in evaluated[::stride]:
        mark(point, None)
    # the last evaluated step of each epoch k, i.e. with epoch in (k-1, k]
    last_of_epoch: dict[int, CurvePoint] = {}
    for point in evaluated:
        if point.epoch is not None:
            last_of_epoch[max(1, math.ceil(point.epoch - 1e-6))] = point
    for k, point in sorted(last_of_epoch.items()):
        if abs(point.epoch - k) < 1e-6:
            mark(point, f"end of epoch {k}")
        elif point is not evaluated[-1]:
            mark(point, f"last eval of epoch {k}")
    by_step = {p.step: p for p in evaluated}
    if best_step in by_step:
        mark(by_step[best_step], "best")
    if final_step in by_step:
        mark(by_step[final_step], "final")
    elif evaluated:
        mark(evaluated[-1], "last eval")
    return [ResultRow(by_step[step], tuple(labels[step])) for step in sorted(labels)]


@dataclass(frozen=True)
class BlimpTask:
    uid: str
    field: str
    term: str
    correct: int
    total: int
    accuracy: float
    description: str


@dataclass(frozen=True)
class BlimpCategory:
    term: str
    tasks: int
    accuracy: float  # pooled over the category's pairs
    worst: BlimpTask
    best: BlimpTask


@dataclass
class BlimpSummary:
    overall: float
    model: str
    scoring: str
    strong: list[BlimpTask]
    moderate: list[BlimpTask]
    weak: list[BlimpTask]
    categories: list[BlimpCategory]
    pairs: int = 0
    limit: int | None = None  # pairs per task when the run did not score all of them

    @property
    def tasks(self) -> int:
        return len(self.strong) + len(self.moderate) + len(self.weak)


def summarize_blimp(results: dict, descriptions: dict[str, str], source: str = "blimp_results.json") -> BlimpSummary:
    """Tiers and categories of a ``blimp_results.json`` (as ``stentor-hub eval blimp`` writes it)."""
    try:
        overall, task_results = float(results["overall"]), results["tasks"]
    except (KeyError, TypeError, ValueError):
        raise CardError(f"{source} has no numeric 'overall' and 'tasks'; pass the file `stentor-hub eval blimp` writes") from None
    if not (math.isfinite(overall) and 0 <= overall <= 100):
        raise CardError(f"{source}: 'overall' is {results['overall']!r}; an accuracy is a percentage from 0 to 100")
    if not isinstance(task_results, dict):
        raise CardError(f"{source}: 'tasks' must map task names to results, got {type(task_results).__name__}")
    tasks = []
    for uid in sorted(task_results):
        r = task_results[uid]
        if uid not in descriptions:
            raise CardError(f"{source}: BLiMP task {uid!r} has no description in {BLIMP_DESCRIPTIONS}; add a one-line description")
        try:
            tasks.append(BlimpTask(uid, r["field"], r["linguistics_term"], int(r["correct"]), int(r["total"]),
                                   float(r["accuracy"]), descriptions[uid]))
        except (KeyError, TypeError, ValueError) as e:
            raise CardError(f"{source}: task {uid!r} lacks a valid {e}; each task needs correct, total, accuracy, "
                             "field and linguistics_term") from None
        task = tasks[-1]
        if not (math.isfinite(task.accuracy) and 0 <= task.accuracy <= 100) or not 0 <= task.correct <= task.total:
            raise CardError(f"{source}: task {uid!r} has accuracy {r['accuracy']!r}, correct {r['correct']!r}, total "
                            f"{r['total']!r}; accuracy must be a percentage from 0 to 100 and 0 <= correct <= total")
    if not tasks:
        raise CardError(f"{source} has no tasks")
    by_accuracy = sorted(tasks, key=lambda t: (-t.accuracy, t.uid))
    categories = []
    for term in sorted({t.term for t in tasks}):
        members = [t for t in by_accuracy if t.term == term]
        pooled = 100.0 * sum(t.correct for t in members) / max(1, sum(t.total for t in members))
        categories.append(BlimpCategory(term, len(members), pooled, members[-1], members[0]))
    categories.sort(key=lambda c: (-c.accuracy, c.term))
    return BlimpSummary(
        overall=overall, model=str(results.get("model", "")), scoring=str(results.get("scoring", "")),
        strong=[t for t in by_accuracy if t.accuracy >= BLIMP_STRONG],
        moderate=[t for t in by_accuracy if BLIMP_WEAK < t.accuracy < BLIMP_STRONG],
        weak=[t for t in by_accuracy if t.accuracy <= BLIMP_WEAK],
        categories=categories,
        pairs=sum(t.total for t in tasks),
        limit=results.get("limit") if results.get("complete") is False or results.get("limit") else None,
    )


def load_card_config(path: str | os.PathLike | None) -> dict:
    """The author's card config merged over the defaults in ``cards/card_config.yaml``.

    YAML: metadata, settings and prose keys at the top level; extra sections under ``sections``
    (a list of ``{title, text, before | after}``). Markdown: the metadata and settings as YAML front
    matter, then any number of ``## Heading`` sections, each kept in the order written. A section's
    first line may be ``<!-- before: Architecture -->`` or ``<!-- after: Quick start -->`` to place
    it; ``## Summary``, ``## Sample outputs`` and ``## Citation`` fill those parts of the card.

    The result holds the metadata and settings, the prose keys, and ``sections``: the author's
    sections as ``AuthorSection``s, in the order written."""
    config = read_yaml_mapping(resource_dir("cards") / DEFAULT_CARD_CONFIG, "card config", CardError)
    config["sections"] = []
    if path is None:
        return config
    path = Path(path)
    if not path.is_file():
        raise MissingInputError(f"card config {path} does not exist")
    text = path.read_text(encoding="utf-8")
    sections: list[AuthorSection] = []
    if path.suffix.lower() in (".md", ".markdown"):
        user, body = {}, text
        match = re.match(r"^---\s*\n(.*?)\n---\s*(\n|$)", text, re.S)
        if match:
            try:
                user, body = yaml.safe_load(match.group(1)) or {}, text[match.end():]
            except yaml.YAMLError as e:
                raise CardError(f"card config {path}: the front matter is not valid YAML: {e}") from None
        if not isinstance(user, dict):
            raise CardError(f"card config {path}: the front matter must be a mapping of metadata and settings")
        if "sections" in user:
            raise CardError(f"card config {path}: write sections as '## Heading' blocks, not a 'sections' key")
        for heading, content in _markdown_sections(body, path):
            key = _section_key(heading)
            if key in MERGED_PROSE:
                user[key] = content
            else:
                sections.append(AuthorSection.parse(heading, content, path))
    else:
        user = read_yaml_mapping(path, "card config", CardError)
        for i, entry in enumerate(user.pop("sections", None) or []):
            if not isinstance(entry, dict) or not isinstance(entry.get("title"), str) or not isinstance(entry.get("text"), str):
                raise CardError(f"card config {path}: sections[{i}] must be a mapping with 'title' and 'text' "
                                "(and optionally 'before' or 'after' a section of the card)")
            sections.append(AuthorSection.parse(entry["title"], entry["text"], path,
                                                before=entry.get("before"), after=entry.get("after")))
    unknown = sorted(set(user) - set(PROSE_SECTIONS) - set(METADATA_KEYS) - set(SETTING_KEYS))
    if unknown:
        raise CardError(f"card config {path}: unknown keys {unknown}; metadata keys are {list(METADATA_KEYS)}, "
                         f"settings are {list(SETTING_KEYS)}, prose sections are {list(PROSE_SECTIONS)}")
    for key in PROSE_SECTIONS:
        if key in user and user[key] is not None and not isinstance(user[key], str):
            raise CardError(f"card config {path}: '{key}' must be text (Markdown), got {type(user[key]).__name__}")
    # the prose keys of the first card configs (intended_uses, limitations, notices) are sections too
    for key in PROSE_SECTIONS:
        if key not in MERGED_PROSE and user.get(key):
            sections.append(AuthorSection.parse(key.replace("_", " ").capitalize(), user.pop(key), path))
    check_card_metadata(user, path)
    merged = {**config, **user, "sections": sections}
    for key, value in config.items():  # nested settings merge one level deep (generation: {temperature: 0.7})
        if isinstance(value, dict) and isinstance(user.get(key), dict):
            merged[key] = {**value, **user[key]}
    _check_settings(merged, path)
    return merged


def _section_key(heading: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", heading.lower()).strip("_")


@dataclass(frozen=True)
class AuthorSection:
    """A ``## Section`` of the author's, placed ``before`` or ``after`` a section of the card
    (by title); without either, where the Hugging Face model-card template puts its kind."""

    title: str
    text: str
    before: str | None = None
    after: str | None = None

    @classmethod
    def parse(cls, title: str, text: str, source: Path, before: str | None = None,
              after: str | None = None) -> "AuthorSection":
        text = text.strip()
        marker = re.match(r"<!--\s*(before|after)\s*:\s*(.+?)\s*-->\s*", text)
        if marker:
            if before or after:
                raise CardError(f"card config {source}: section {title!r} is placed twice; keep one of before/after")
            before, after = (marker.group(2), None) if marker.group(1) == "before" else (None, marker.group(2))
            text = text[marker.end():].strip()
        if before and after:
            raise CardError(f"card config {source}: section {title!r} has both 'before' and 'after'; keep one")
        if not before and not after:
            before, after = HF_TEMPLATE_PLACES.get(_section_key(title), DEFAULT_PLACE)
        return cls(title.strip(), text, before, after)


def _check_settings(config: dict, path: Path) -> None:
    def number(key: str, value: Any) -> None:
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0):
            raise CardError(f"card config {path}: '{key}' must be a non-negative number, got {value!r}")

    generation = config.get("generation") or {}
    if not isinstance(generation, dict) or set(generation) - set(GENERATION_KEYS):
        raise CardError(f"card config {path}: 'generation' must be a mapping of {list(GENERATION_KEYS)}")
    for key in ("temperature", "top_p", "top_k", "repetition_penalty", "max_new_tokens"):
        number(f"generation.{key}", generation.get(key))
    number("power_watts", config.get("power_watts"))
    number("grid_intensity", config.get("grid_intensity"))
    number("sample_seed", config.get("sample_seed"))
    prompts = config.get("sample_prompts") or []
    if not isinstance(prompts, list) or not all(isinstance(p, str) and p.strip() for p in prompts):
        raise CardError(f"card config {path}: 'sample_prompts' must be a list of non-empty prompts")
    url = config.get("project_url")
    if url is not None and not (isinstance(url, str) and re.match(r"https?://\S+$", url)):
        raise CardError(f"card config {path}: 'project_url' must be an http(s) URL, got {url!r}")


_LANGUAGE = re.compile(r"[a-z]{2,3}([-_][A-Za-z0-9]{2,8})*")
_LICENSE = re.compile(r"[a-z0-9][a-z0-9.+-]*")


def check_card_metadata(config: dict, source: str | os.PathLike) -> None:
    """The Hub metadata keys of a card config have the shapes the Hub accepts (``license`` an id
    such as ``apache-2.0``, ``language`` ISO codes, ``tags``/``datasets`` lists of text, ``widget``
    a list of ``{text: ...}``); else a :class:`CardError` naming the file, key, value and shape."""
    def text_list(value) -> bool:
        return isinstance(value, list) and all(isinstance(v, str) and v.strip() for v in value)

    rules = {
        "model_name": (lambda v: isinstance(v, str) and v.strip(), "a non-empty text"),
        "license": (lambda v: isinstance(v, str) and _LICENSE.fullmatch(v), "a license id such as apache-2.0 or mit"),
        "language": (lambda v: (isinstance(v, str) and _LANGUAGE.fullmatch(v))
                     or (text_list(v) and all(_LANGUAGE.fullmatch(x) for x in v)), "an ISO 639 code or a list of them (en, fr)"),
        "library_name": (lambda v: isinstance(v, str) and v.strip(), "a library name such as transformers"),
        "pipeline_tag": (lambda v: isinstance(v, str) and re.fullmatch(r"[a-z0-9-]+", v), "a task id such as text-generation"),
        "tags": (text_list, "a list of texts"),
        "datasets": (lambda v: text_list(v) and all(looks_like_hub_id(x) or "/" not in x for x in v),
                     "a list of Hub dataset ids (OWNER/NAME)"),
        "widget": (lambda v: isinstance(v, list) and all(isinstance(w, dict) and isinstance(w.get("text"), str) for w in v),
                   "a list of mappings with a 'text' prompt, e.g. [{text: 'Once upon a time'}]"),
        "base_model": (lambda v: isinstance(v, str) or text_list(v), "a Hub model id or a list of them"),
        "eval_dataset": (lambda v: isinstance(v, (str, dict)), "a dataset name or a mapping {name, type, split}"),
    }
    for key, (ok, shape) in rules.items():
        if key in config and config[key] is not None and not ok(config[key]):
            raise CardError(f"card config {source}: '{key}' is {config[key]!r}; it must be {shape}")


def _markdown_sections(body: str, path: Path) -> list[tuple[str, str]]:
    sections, heading, lines, fenced = [], None, [], False
    for line in body.splitlines():
        if line.startswith("```"):
            fenced = not fenced
        if line.startswith("## ") and not fenced:
            if heading is not None:
                sections.append((heading, "\n".join(lines).strip()))
            heading, lines = line[3:].strip(), []
        elif heading is None and line.strip():
            raise CardError(f"card config {path}: text before the first '## Section' heading: {line.strip()[:60]!r}")
        elif heading is not None:
            lines.append(line)
    if heading is not None:
        sections.append((heading, "\n".join(lines).strip()))
    return sections


def _read_json(path: Path, what: str) -> dict:
    return read_json(path, what, CardError)


def _flatten(prefix: str, value: Any) -> list[tuple[str, Any]]:
    if isinstance(value, dict):
        out = []
        for key, sub in value.items():
            out += _flatten(f"{prefix}.{key}" if prefix else str(key), sub)
        return out
    return [(prefix, value)]


@dataclass
class ModelCardFacts:
    """Everything the card says, gathered before any rendering."""

    run_dir: Path
    checkpoint: str  # "best" or "final": the weights that are published
    config: dict
    manifest: RunManifest
    curves: list[CurvePoint]
    tokenizer_config: dict
    card_config: dict
    blimp: BlimpSummary | None = None
    blimp_raw: dict | None = None
    repo_id: str | None = None
    tokenizer_dir: Path | None = None  # the folder the tokenizer files come from
    space_id: str | None = None  # the demo Space the card links to (``publish --space``)
    space_url: str | None = None
    parameters: list[ParameterGroup] = field(default_factory=list)
    result_rows: list[ResultRow] = field(default_factory=list)
    compared: list[ComparedModel] = field(default_factory=list)  # earlier models (--compare)
    samples: list[Sample] | None = None  # filled by add_samples from the weights being published

    @classmethod
    def from_run(cls, run_dir: "str | os.PathLike | RunDir", *, blimp: str | os.PathLike | None = None,
                 card_config: str | os.PathLike | None = None, repo_id: str | None = None,
                 checkpoint: str = "best", template_dir: str | os.PathLike | None = None,
                 compare: "list[str | os.PathLike]" = ()) -> "ModelCardFacts":
        """Read a training output folder (``RUN_DIR``); ``compare`` names earlier models (run
        folders or card-facts files) to set side by side. Raises :class:`MissingInputError` /
        :class:`RunDirError` / :class:`CardError` naming the file and the missing fact."""
        run = RunDir.open(run_dir)
        config = _read_json(run.checkpoint(checkpoint) / "config.json", f"the {checkpoint} checkpoint's model config")
        manifest = run.read_manifest()
        curves = run.read_curves()
        tokenizer_dir = run.tokenizer
        tokenizer_config = _read_json(tokenizer_dir / "tokenizer_config.json", "the exported tokenizer")
        blimp_raw = summary = None
        if blimp is not None:
            blimp_raw = _read_json(Path(blimp), "written by stentor-hub eval blimp")
            summary = summarize_blimp(blimp_raw, blimp_descriptions(template_dir), str(blimp))
        facts = cls(run_dir=run.path, checkpoint=checkpoint, config=config, manifest=manifest, curves=curves,
                    tokenizer_config=tokenizer_config, card_config=load_card_config(card_config), blimp=summary,
                    blimp_raw=blimp_raw, repo_id=repo_id, tokenizer_dir=tokenizer_dir)
        facts.parameters = parameter_breakdown(config)
        facts.result_rows = select_result_rows(curves, manifest.best.get("step"), manifest.final.get("step"))
        facts.compared = [ComparedModel.load(source) for source in compare]
        return facts

    @property
    def sample_prompts(self) -> list[str]:
        return list(self.card_config.get("sample_prompts") or [])

    @property
    def sample_seed(self) -> int:
        return int(self.card_config.get("sample_seed") or 0)

    def add_samples(self, model_dir: str | os.PathLike, tokenizer_dir: str | os.PathLike | None = None) -> None:
        """Generate the sample outputs (the card config's ``sample_prompts``) from ``model_dir``."""
        if self.sample_prompts:
            self.samples = generate_samples(model_dir, self.sample_prompts, self.generation, self.sample_seed,
                                            tokenizer_dir)

    @property
    def this_model(self) -> ComparedModel:
        return ComparedModel.of(self)

    @property
    def comparison(self) -> list[tuple[str, list[str]]]:
        return compare_rows(self.this_model, self.compared)

    # derived facts the templates use
    @property
    def model_name(self) -> str:
        if self.card_config.get("model_name"):
            return str(self.card_config["model_name"])
        return self.repo_id.split("/")[-1] if self.repo_id else self.run_dir.resolve().name

    @property
    def published_step(self) -> int:
        return int(getattr(self.manifest, self.checkpoint)["step"])

    @property
    def hyperparameters(self) -> list[tuple[str, Any]]:
        return _flatten("", self.manifest.recipe)

    @property
    def tokenizer(self) -> dict:
        """Ids and names of the tokenizer, from its ``tokenizer_config.json``."""
        added = {int(i): t["content"] for i, t in self.tokenizer_config.get("added_tokens_decoder", {}).items()}
        ids = {content: i for i, content in added.items()}
        base = min(added) if added else self.config["vocab_size"]
        tc = self.tokenizer_config
        return {
            "class": tc.get("tokenizer_class", ""), "total_ids": (max(added) + 1) if added else base, "base_vocab": base,
            "reserved": sum(1 for c in added.values() if c.startswith("<|reserved_")),
            "bos": tc.get("bos_token"), "bos_id": ids.get(tc.get("bos_token")),
            "eos": tc.get("eos_token"), "eos_id": ids.get(tc.get("eos_token")),
            "pad": tc.get("pad_token"), "pad_id": ids.get(tc.get("pad_token")),
            "add_bos": bool(tc.get("add_bos_token", False)), "add_eos": bool(tc.get("add_eos_token", False)),
            "vocab": _recipe_get(self.manifest.recipe, "tokenizer", "vocab") or "",
            "chat_template": (self.tokenizer_dir / "chat_template.jinja").is_file() or "chat_template" in tc,
        }

    @property
    def train_sources(self) -> list[str]:
        return [_describe_source(s) for s in _source_list(self.manifest.data.get("train_sources"))]

    @property
    def train_source_tokens(self) -> list[tuple[str, int]] | None:
        """``(source, tokens it gave)`` for each train source, when the run recorded them."""
        counts = self.manifest.data.get("source_tokens_by_source")
        sources = self.train_sources
        if not isinstance(counts, list) or len(counts) != len(sources) or len(sources) < 1:
            return None
        if not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in counts):
            raise CardError(f"{Path(self.run_dir) / MANIFEST_FILE}: data.source_tokens_by_source must be counts of tokens "
                            f"(whole numbers, 0 or more), got {counts!r}")
        return list(zip(sources, counts))

    @property
    def eval_sources(self) -> list[str]:
        """Empty when the evaluation blocks were held out of the training stream."""
        return [_describe_source(s) for s in _source_list(self.manifest.data.get("eval_sources"))]

    @property
    def hours(self) -> float:
        return float(self.manifest.training.get("wall_time_seconds") or 0.0) / 3600.0

    # --- sizes -------------------------------------------------------------------------------

    @property
    def total_parameters(self) -> int:
        return self.parameters[-1].count

    @property
    def embedding_parameters(self) -> int:
        """vocab x hidden (once: the output layer shares it when the embeddings are tied)."""
        return int(self.config["vocab_size"]) * int(self.config["hidden_size"])

    @property
    def embedding_share(self) -> float:
        return 100.0 * self.embedding_parameters / self.total_parameters

    @property
    def non_embedding_parameters(self) -> int:
        return self.total_parameters - self.embedding_parameters

    @property
    def head_dim(self) -> int:
        return int(self.config.get("head_dim") or self.config["hidden_size"] // self.config["num_attention_heads"])

    @property
    def context_length(self) -> int | None:
        return self.config.get("max_position_embeddings")

    @property
    def repo_ref(self) -> str:
        """The id the card's code loads: the repository, or ``OWNER/NAME`` when none is known yet."""
        return self.repo_id or f"OWNER/{self.model_name}"

    @property
    def generation(self) -> dict:
        """The recommended generation settings (card config ``generation``), in a fixed order."""
        settings = self.card_config.get("generation") or {}
        return {k: settings[k] for k in GENERATION_KEYS if settings.get(k) is not None}

    @property
    def hardware(self) -> str:
        hw = self.manifest.hardware
        return f"{hw.get('num_processes', 1)} × {hw.get('device_name') or hw.get('device') or 'unknown device'}"

    # --- training dynamics -------------------------------------------------------------------

    @property
    def epochs(self) -> list["EpochSummary"]:
        return summarize_epochs(self.curves, self.manifest.training)

    @property
    def stop_reason(self) -> str:
        return describe_stop(self.manifest.training, self.manifest.recipe)

    # --- environmental impact ----------------------------------------------------------------

    @property
    def environment(self) -> "Environment":
        return estimate_environment(self.manifest, self.card_config, self.hours)

    # --- notices, citation, badges -----------------------------------------------------------

    @property
    def notices(self) -> list[str]:
        return consistency_notices(self)

    @property
    def bibtex(self) -> str:
        """A BibTeX entry from the metadata; ``## Citation`` in the card config replaces it."""
        cc = self.card_config
        key = cc.get("citation_key") or re.sub(r"[^a-z0-9]+", "", self.model_name.lower()) + _year(self.manifest)
        authors = cc.get("authors") or ([self.repo_id.split("/")[0]] if self.repo_id else [])
        fields = [("title", f"{{{self.model_name}: a {_short_count(self.total_parameters)}-parameter language model}}")]
        if authors:
            fields.append(("author", "{" + " and ".join(authors if isinstance(authors, list) else [authors]) + "}"))
        if _year(self.manifest):
            fields.append(("year", "{" + _year(self.manifest) + "}"))
        if self.repo_id:
            fields.append(("howpublished", f"{{\\url{{https://huggingface.co/{self.repo_id}}}}}"))
        if cc.get("project_url"):
            fields.append(("note", f"{{Trained with stentor-hub, \\url{{{cc['project_url']}}}}}"))
        body = ",\n".join(f"  {name} = {value}" for name, value in fields)
        return f"@misc{{{key},\n{body}\n}}"

    @property
    def badges(self) -> list[tuple[str, str, str]]:
        """(label, message, shields.io image URL) of each badge."""
        items = [("license", str(self.card_config.get("license")), "blue"),
                 ("parameters", _short_count(self.total_parameters), "informational"),
                 ("training", f"{format_number(self.hours, 2)} h", "orange"),
                 ("hardware", self.hardware, "lightgrey")]
        if self.context_length:
            items.append(("context", f"{format_count(self.context_length)} tokens", "informational"))
        items.append(("vocabulary", format_count(self.config["vocab_size"]), "informational"))
        if self.blimp is not None:
            items.append(("BLiMP", format_percent(self.blimp.overall), "success"))
        return [(label, message, shields_badge(label, message, color)) for label, message, color in items]

    def metadata(self) -> dict:
        """The YAML front matter: Hub metadata and a ``model-index`` with the run's results."""
        cc, best, final = self.card_config, self.manifest.best, self.manifest.final
        eval_dataset = cc.get("eval_dataset") or _eval_dataset(self.manifest.data)
        task = {"type": "text-generation", "name": "Text Generation"}
        metrics = [
            {"type": "loss", "name": "Best validation loss", "value": _round(best["eval_loss"], 4)},
            {"type": "perplexity", "name": "Best validation perplexity", "value": _round(best["eval_ppl"], 2)},
        ]
        if final.get("eval_loss") is not None:
            metrics.append({"type": "loss", "name": "Final-epoch validation loss", "value": _round(final["eval_loss"], 4)})
        if final.get("eval_ppl") is not None:
            metrics.append({"type": "perplexity", "name": "Final-epoch validation perplexity", "value": _round(final["eval_ppl"], 2)})
        results = [{"task": task, "dataset": eval_dataset, "metrics": metrics}]
        if self.blimp is not None:
            results.append({
                "task": task,
                "dataset": {"name": "BLiMP", "type": "nyu-mll/blimp", "split": "train"},
                "metrics": [{"type": "accuracy", "name": "BLiMP overall accuracy", "value": _round(self.blimp.overall, 2)}],
            })
        meta = {
            "language": cc.get("language") or ["en"],
            "license": cc.get("license"),
            "library_name": cc.get("library_name") or "transformers",
            "pipeline_tag": cc.get("pipeline_tag") or "text-generation",
            "tags": sorted(set(cc.get("tags") or [])),
            "datasets": cc.get("datasets") or _hub_sources(_source_list(self.manifest.data.get("train_sources"))),
            "widget": cc.get("widget") or [],
            "model-index": [{"name": self.model_name, "results": results}],
        }
        if cc.get("base_model"):
            meta["base_model"] = cc["base_model"]
        co2 = self.environment.co2_metadata()
        if co2:
            meta["co2_eq_emissions"] = co2
        if not meta["license"]:
            raise CardError("the card needs a license: set 'license' in the card config (e.g. license: apache-2.0)")
        return {k: v for k, v in meta.items() if v not in ([], None)}


def _round(value: Any, digits: int) -> float:
    return round(float(value), digits)


def _recipe_get(recipe: dict, *keys: str) -> Any:
    for key in keys:
        if not isinstance(recipe, dict) or key not in recipe:
            return None
        recipe = recipe[key]
    return recipe


def _source_list(sources: Any) -> list:
    # the manifest writes a sentence instead of a list when evaluation blocks were held out
    return list(sources) if isinstance(sources, list) else []


def _source_path(source: Any) -> str:
    return str(source.get("path", "")) if isinstance(source, dict) else str(source)


def _describe_source(source: Any) -> str:
    """A Hub dataset id as is; a local file by its name only (the card must not show local paths)."""
    text = _source_path(source) if _is_hub_source(source) else Path(_source_path(source)).name
    if isinstance(source, dict) and source.get("max_chars"):
        text += f" (first {int(source['max_chars']):,} characters)"
    return text


def _is_hub_source(source: Any) -> bool:
    if isinstance(source, dict) and source.get("kind"):
        return source["kind"] == "hub"
    return looks_like_hub_id(_source_path(source))


def _hub_sources(sources: list) -> list[str]:
    return sorted({_source_path(s) for s in sources if _is_hub_source(s)})


def _eval_dataset(data: dict) -> dict:
    sources = _source_list(data.get("eval_sources")) or _source_list(data.get("train_sources"))
    held_out = not _source_list(data.get("eval_sources"))
    if not sources:
        return {"name": "held-out validation blocks", "type": "validation", "split": "validation"}
    path = _source_path(sources[0])
    name = path if _is_hub_source(sources[0]) else Path(path).name
    if held_out:
        name = f"{name} (held-out blocks)"
    return {"name": name, "type": path if _is_hub_source(sources[0]) else Path(path).stem, "split": "validation"}


# --- numbers, one way everywhere ---------------------------------------------------------------


def format_count(n: Any) -> str:
    """An integer with thousands separators: 8,064."""
    return "—" if n is None else f"{int(n):,}"


def format_number(x: Any, digits: int = 4) -> str:
    """A float with a fixed number of decimals (no separators: 7200 s, 5.1000); missing is "—"."""
    return "—" if x is None else f"{float(x):.{digits}f}"


def format_percent(x: Any) -> str:
    """A percentage with two decimals, as the published cards print them: 74.17%."""
    return "—" if x is None else f"{float(x):.2f}%"


def _short_count(n: int) -> str:
    """30.4M, 598.3K: for badges and titles."""
    for size, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
        if n >= size:
            return f"{n / size:.1f}{suffix}"
    return str(n)


def indefinite_article(n: Any) -> str:
    """ "a" or "an" before a number as it is read out: an 8,064-id, an 11-layer, a 598,336-parameter."""
    leading = int(f"{int(n):,}".split(",")[0])  # the group read first: 8 in 8,064 ("eight thousand")
    return "an" if str(leading).startswith("8") or leading in (11, 18) else "a"


def shields_badge(label: str, message: str, color: str) -> str:
    """A static shields.io badge URL (dashes and underscores doubled, as shields.io escapes them)."""
    from urllib.parse import quote

    def escape(text: str) -> str:
        return quote(text.replace("-", "--").replace("_", "__"), safe="")

    return f"https://img.shields.io/badge/{escape(label)}-{escape(message)}-{color}"


def _year(manifest: RunManifest) -> str:
    stamp = manifest.finished_at or manifest.started_at or ""
    return stamp[:4] if re.match(r"\d{4}", stamp) else ""


# --- training dynamics -------------------------------------------------------------------------


@dataclass(frozen=True)
class EpochSummary:
    epoch: int
    first_step: int
    last_step: int
    steps: int
    seconds: float | None  # the run's training time shared out by steps (the curves have no clock)
    first_eval_loss: float | None
    last_eval_loss: float | None
    last_eval_ppl: float | None
    fraction: float | None = None  # of a full epoch, when the run knows its steps per epoch


def summarize_epochs(curves: list[CurvePoint], training: dict) -> list[EpochSummary]:
    """Per epoch: its steps, its share of the training time, its first and last eval loss."""
    steps_total = int(training.get("steps") or 0)
    seconds_total = training.get("train_seconds") or training.get("wall_time_seconds")
    per_epoch = training.get("steps_per_epoch")
    by_epoch: dict[int, list[CurvePoint]] = {}
    for point in curves:
        if point.epoch is not None:
            by_epoch.setdefault(max(1, math.ceil(point.epoch - 1e-6)), []).append(point)
    out, previous_last = [], 0
    for k in sorted(by_epoch):
        points = by_epoch[k]
        last = max(p.step for p in points)
        if per_epoch:  # the epoch's true step range, not only its logged steps
            last = min(steps_total or last, int(per_epoch) * k) if k < max(by_epoch) else (steps_total or last)
        steps = last - previous_last
        evals = sorted((p for p in points if p.eval_loss is not None), key=lambda p: p.step)
        seconds = float(seconds_total) * steps / steps_total if seconds_total and steps_total else None
        out.append(EpochSummary(k, previous_last + 1, last, steps, seconds,
                                evals[0].eval_loss if evals else None, evals[-1].eval_loss if evals else None,
                                evals[-1].eval_ppl if evals else None, steps / per_epoch if per_epoch else None))
        previous_last = last
    return out


def describe_stop(training: dict, recipe: dict) -> str:
    """Why the run ended, in words, with the rule's figure from the recipe."""
    rule = training.get("stopped_by") or "max_steps"
    settings = recipe.get("training", {}) if isinstance(recipe, dict) else {}
    steps = format_count(training.get("steps"))
    if rule == "token_budget":
        return (f"it reached the token budget of {format_count(settings.get('token_budget'))} tokens "
                f"after {steps} steps")
    if rule == "epochs":
        return f"it completed the configured {format_count(settings.get('epochs'))} epochs ({steps} steps)"
    if rule == "max_steps":
        return f"it reached max_steps = {format_count(settings.get('max_steps') or training.get('max_steps'))}"
    return f"{rule} (after {steps} steps)"


# --- environmental impact ----------------------------------------------------------------------

# Board power (TDP, watts) of devices a run may name; a card config's power_watts overrides it.
DEVICE_POWER_WATTS = {
    "t4": 70, "l4": 72, "a10g": 150, "a10": 150, "v100": 300, "p100": 250, "a100": 400, "h100": 700,
    "h200": 700, "rtx 3090": 350, "rtx 4090": 450, "rtx a6000": 300, "l40s": 350,
}


@dataclass(frozen=True)
class Environment:
    hardware: str
    processes: int
    hours: float
    watts: float | None  # per device
    watts_source: str
    grid_intensity: float | None  # kg CO2eq per kWh
    location: str | None
    source: str | None
    training_type: str

    @property
    def kwh(self) -> float | None:
        return None if self.watts is None else self.watts * self.processes * self.hours / 1000.0

    @property
    def co2_kg(self) -> float | None:
        return None if self.kwh is None or self.grid_intensity is None else self.kwh * self.grid_intensity

    def co2_metadata(self) -> dict:
        """The Hub's ``co2_eq_emissions`` (emissions in grams), when the card can compute them."""
        if self.co2_kg is None:
            return {}
        meta = {"emissions": round(self.co2_kg * 1000.0, 2), "source": self.source or "stentor-hub estimate: "
                "device power x training hours x grid intensity", "training_type": self.training_type,
                "hardware_used": self.hardware}
        if self.location:
            meta["geographical_location"] = self.location
        return meta


def device_power(device_name: str) -> int | None:
    name = device_name.lower()
    for key in sorted(DEVICE_POWER_WATTS, key=len, reverse=True):
        if re.search(rf"(^|[^a-z0-9]){re.escape(key)}([^a-z0-9]|$)", name):
            return DEVICE_POWER_WATTS[key]
    return None


def estimate_environment(manifest: RunManifest, card_config: dict, hours: float) -> Environment:
    hw = manifest.hardware
    name = str(hw.get("device_name") or hw.get("device") or "unknown")
    processes = int(hw.get("num_processes") or 1)
    if card_config.get("power_watts") is not None:
        watts, source = float(card_config["power_watts"]), "the card config (power_watts)"
    elif (known := device_power(name)) is not None:
        watts, source = float(known), f"the board power of the {name}"
    else:
        watts, source = None, f"unknown for {name}: set power_watts in the card config"
    return Environment(f"{processes} × {name}", processes, hours, watts, source, card_config.get("grid_intensity"),
                       card_config.get("geographical_location"), card_config.get("co2_source"),
                       card_config.get("training_type") or "pre-training")


# --- consistency -------------------------------------------------------------------------------


def consistency_notices(facts: "ModelCardFacts") -> list[str]:
    """Where the run's facts contradict each other or the card config, one sentence each."""
    notices = []
    training, recipe = facts.manifest.training, facts.manifest.recipe
    settings = recipe.get("training", {}) if isinstance(recipe, dict) else {}
    budget, per_step = settings.get("token_budget"), training.get("tokens_per_step")
    max_steps = settings.get("max_steps") or training.get("max_steps")
    if budget and per_step and max_steps and per_step * max_steps < budget:
        notices.append(f"The recipe sets a token budget of {format_count(budget)} tokens, but "
                       f"{format_count(per_step)} tokens per step × {format_count(max_steps)} steps at most is "
                       f"{format_count(per_step * max_steps)}: the budget cannot be reached. "
                       f"This run saw {format_count(training.get('tokens_seen'))} tokens.")
    steps_per_epoch, epochs = training.get("steps_per_epoch"), settings.get("epochs")
    if budget and per_step and steps_per_epoch and epochs and per_step * steps_per_epoch * epochs < budget \
            and training.get("stopped_by") != "token_budget":
        notices.append(f"{format_count(epochs)} epochs of {format_count(steps_per_epoch)} steps hold "
                       f"{format_count(per_step * steps_per_epoch * epochs)} tokens, fewer than the token budget "
                       f"of {format_count(budget)}.")
    claimed = facts.manifest.model.get("parameters")
    if claimed is not None and int(claimed) != facts.total_parameters:
        notices.append(f"The run recorded {format_count(claimed)} parameters; its config.json has "
                       f"{format_count(facts.total_parameters)}.")
    if facts.manifest.best.get("note"):
        notices.append(f"Best checkpoint: {facts.manifest.best['note']}.")
    if facts.manifest.best.get("step", 0) > facts.manifest.final.get("step", 0):
        notices.append(f"The best step ({format_count(facts.manifest.best['step'])}) is after the final step "
                       f"({format_count(facts.manifest.final['step'])}).")
    listed = facts.card_config.get("datasets")
    trained = set(_hub_sources(_source_list(facts.manifest.data.get("train_sources"))))
    if listed and trained and set(listed) - trained:
        notices.append(f"The card config lists datasets ({', '.join(sorted(set(listed) - trained))}) that are not among "
                       f"the run's Hub training sources ({', '.join(sorted(trained))}).")
    return notices


# --- earlier models, side by side ----------------------------------------------------------------

COMPARED_FIELDS = ("name", "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                   "num_attention_heads", "head_dim", "context_length", "parameters", "embedding_parameters",
                   "token_budget", "tokens_seen", "training_hours", "processes", "best_perplexity", "tokenizer",
                   "precision")


@dataclass(frozen=True)
class ComparedModel:
    """The figures of a model the card compares with: from its run folder or a card-facts file
    (YAML/JSON with the keys of :data:`COMPARED_FIELDS`). A figure not known is ``None``."""

    name: str
    vocab_size: int | None = None
    hidden_size: int | None = None
    intermediate_size: int | None = None
    num_hidden_layers: int | None = None
    num_attention_heads: int | None = None
    head_dim: int | None = None
    context_length: int | None = None
    parameters: int | None = None
    embedding_parameters: int | None = None
    token_budget: int | None = None
    tokens_seen: int | None = None
    training_hours: float | None = None
    processes: int | None = None
    best_perplexity: float | None = None
    tokenizer: str | None = None
    precision: str | None = None

    @property
    def embedding_share(self) -> float | None:
        if self.parameters and self.embedding_parameters is not None:
            return 100.0 * self.embedding_parameters / self.parameters
        return None

    @property
    def non_embedding_parameters(self) -> int | None:
        if self.parameters is None or self.embedding_parameters is None:
            return None
        return self.parameters - self.embedding_parameters

    @classmethod
    def of(cls, facts: "ModelCardFacts") -> "ComparedModel":
        c, t, r = facts.config, facts.manifest.training, facts.manifest.recipe
        return cls(
            name=facts.model_name, vocab_size=c.get("vocab_size"), hidden_size=c.get("hidden_size"),
            intermediate_size=c.get("intermediate_size"), num_hidden_layers=c.get("num_hidden_layers"),
            num_attention_heads=c.get("num_attention_heads"), head_dim=facts.head_dim,
            context_length=facts.context_length, parameters=facts.total_parameters,
            embedding_parameters=facts.embedding_parameters,
            token_budget=_recipe_get(r, "training", "token_budget"), tokens_seen=t.get("tokens_seen"),
            training_hours=round(facts.hours, 2), processes=facts.manifest.hardware.get("num_processes"),
            best_perplexity=facts.manifest.best.get("eval_ppl"),
            tokenizer=_tokenizer_name(facts), precision=facts.manifest.hardware.get("mixed_precision"))

    @classmethod
    def load(cls, source: str | os.PathLike) -> "ComparedModel":
        """A run folder (``RUN_DIR``) or a card-facts file."""
        path = Path(source)
        if path.is_dir():
            return cls.of(ModelCardFacts.from_run(path))
        if not path.is_file():
            raise MissingInputError(f"--compare {path}: no such run folder or card-facts file")
        data = _read_json(path, "card facts") if path.suffix.lower() == ".json" else \
            read_yaml_mapping(path, "card facts", CardError)
        if not isinstance(data, dict) or not data.get("name"):
            raise CardError(f"card facts {path} must be a mapping with at least 'name'; keys are {list(COMPARED_FIELDS)}")
        unknown = sorted(set(data) - set(COMPARED_FIELDS))
        if unknown:
            raise CardError(f"card facts {path}: unknown keys {unknown}; keys are {list(COMPARED_FIELDS)}")
        for key, value in data.items():
            if key not in ("name", "tokenizer", "precision") and value is not None and (
                    isinstance(value, bool) or not isinstance(value, (int, float))):
                raise CardError(f"card facts {path}: '{key}' must be a number, got {value!r}")
        return cls(**{**data, "name": str(data["name"])})


def _tokenizer_name(facts: "ModelCardFacts") -> str:
    vocab = facts.tokenizer["vocab"]
    return f"TokenMonster {vocab}" if vocab else f"TokenMonster ({format_count(facts.tokenizer['total_ids'])} ids)"


def compare_rows(this: ComparedModel, others: list[ComparedModel]) -> list[tuple[str, list[str]]]:
    """The head-to-head table: (figure, [this model, earlier models...]); "—" where unknown."""
    models = [this, *others]

    def row(label: str, fmt, attr: str) -> tuple[str, list[str]]:
        return label, [fmt(getattr(m, attr)) if getattr(m, attr) is not None else "—" for m in models]

    text = lambda v: str(v)  # noqa: E731
    rows = [row("Vocabulary", format_count, "vocab_size"), row("Hidden size", format_count, "hidden_size"),
            row("Intermediate size", format_count, "intermediate_size"), row("Layers", format_count, "num_hidden_layers"),
            row("Attention heads", format_count, "num_attention_heads"), row("Head dimension", format_count, "head_dim"),
            row("Context length", format_count, "context_length"), row("Parameters", format_count, "parameters"),
            row("Embedding share", format_percent, "embedding_share"),
            row("Non-embedding parameters", format_count, "non_embedding_parameters"),
            row("Token budget", format_count, "token_budget"), row("Tokens seen", format_count, "tokens_seen"),
            row("Training time (hours)", lambda v: format_number(v, 2), "training_hours"),
            row("Processes", format_count, "processes"),
            row("Best perplexity", lambda v: format_number(v, 2), "best_perplexity")]
    change = ["—"]
    for other in others:
        if this.best_perplexity is not None and other.best_perplexity:
            change.append(f"{100.0 * (this.best_perplexity - other.best_perplexity) / other.best_perplexity:+.2f}%")
        else:
            change.append("—")
    rows.append(("Best perplexity, this model vs. it", change))
    rows += [row("Tokenizer", text, "tokenizer"), row("Precision", text, "precision")]
    return rows


# --- sample outputs ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Sample:
    prompt: str
    text: str  # the continuation only


def generate_samples(model_dir: str | os.PathLike, prompts: list[str], settings: dict, seed: int,
                     tokenizer_dir: str | os.PathLike | None = None) -> list[Sample]:
    """Continuations of ``prompts`` by the model in ``model_dir``, on CPU, with ``settings`` (the
    card config's ``generation``) and ``torch.manual_seed(seed)`` before each prompt, so the same
    inputs give the same text. Unfiltered: whatever the model wrote."""
    import torch
    from transformers import AutoModelForCausalLM

    from stentor_hub.tokenizer import load_tokenizer

    tokenizer = load_tokenizer(tokenizer_dir or model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    model.eval()
    kwargs = dict(settings)
    if not kwargs.get("do_sample", True):
        kwargs = {k: v for k, v in kwargs.items() if k not in ("temperature", "top_p", "top_k")}
    samples = []
    for prompt in prompts:
        torch.manual_seed(int(seed))
        inputs = tokenizer(prompt, return_tensors="pt")
        with torch.no_grad():
            out = model.generate(**inputs, pad_token_id=tokenizer.pad_token_id, **kwargs)
        continuation = tokenizer.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
        samples.append(Sample(prompt, continuation))
    return samples


# --- sections: the author's, placed; the contents ------------------------------------------------

TOC_PLACEHOLDER = "[[TOC]]"


def split_sections(body: str) -> tuple[str, list[tuple[str, str]]]:
    """The Markdown before the first ``## `` heading, and each ``## `` section as (title, text
    including its heading); headings inside code fences do not count."""
    preamble, sections, fenced = [], [], False
    for line in body.split("\n"):
        if line.startswith("```"):
            fenced = not fenced
        if line.startswith("## ") and not fenced:
            sections.append((line[3:].strip(), [line]))
        elif sections:
            sections[-1][1].append(line)
        else:
            preamble.append(line)
    return "\n".join(preamble), [(title, "\n".join(lines)) for title, lines in sections]


def place_author_sections(body: str, authored: list[AuthorSection]) -> str:
    """Insert the author's sections into the rendered card, each before or after the section of
    the card it names (in the order written), then fill in the table of contents."""
    preamble, sections = split_sections(body)
    titles = {title.lower(): i for i, title in enumerate(t for t, _ in sections)}
    before: dict[int, list[str]] = {}
    after: dict[int, list[str]] = {}
    appended: dict[int, list[str]] = {}
    for section in authored:
        if section.title.lower() in titles:  # the card already has it: the author's text joins it
            appended.setdefault(titles[section.title.lower()], []).append(section.text)
            continue
        anchor = section.before or section.after
        if anchor.lower() not in titles:
            raise CardError(f"card config: section {section.title!r} is placed {'before' if section.before else 'after'} "
                            f"{anchor!r}, which this card does not have; the card's sections are "
                            f"{[t for t, _ in sections]}")
        target = before if section.before else after
        target.setdefault(titles[anchor.lower()], []).append(f"## {section.title}\n\n{section.text}\n")
    parts = [preamble.rstrip() + "\n"]
    for i, (title, text) in enumerate(sections):
        parts += before.get(i, [])
        parts.append(text.rstrip() + "\n" + "".join(f"\n{extra}\n" for extra in appended.get(i, [])))
        parts += after.get(i, [])
    card = "\n".join(part.rstrip() + "\n" for part in parts)
    headings = [t for t, _ in split_sections(card)[1] if t.lower() != "contents"]
    toc = "\n".join(f"- [{t}](#{heading_anchor(t)})" for t in headings)
    return card.replace(TOC_PLACEHOLDER, toc)


def heading_anchor(title: str) -> str:
    """The anchor GitHub and the Hub give a heading: lower case, punctuation dropped, spaces to dashes."""
    return re.sub(r"[^\w\- ]", "", title.lower(), flags=re.UNICODE).replace(" ", "-")


# --- the card's code -----------------------------------------------------------------------------


@dataclass(frozen=True)
class CodeBlock:
    """A ```python block of a card; ``check`` is the template's marker on the line above it
    (``<!-- check: skip REASON -->``, ``<!-- check: needs-model ID -->``), if any."""

    line: int  # of the opening fence, 1-based
    code: str
    check: str | None = None


def python_blocks(markdown: str) -> list[CodeBlock]:
    blocks, lines, i = [], markdown.split("\n"), 0
    while i < len(lines):
        if lines[i].strip() == "```python":
            start, code = i, []
            i += 1
            while i < len(lines) and lines[i].strip() != "```":
                code.append(lines[i])
                i += 1
            marker = re.match(r"<!--\s*check:\s*(.+?)\s*-->", lines[start - 1].strip()) if start else None
            blocks.append(CodeBlock(start + 1, "\n".join(code) + "\n", marker.group(1) if marker else None))
        i += 1
    return blocks


def blimp_descriptions(template_dir: str | os.PathLike | None = None) -> dict[str, str]:
    """Our one-line descriptions of the BLiMP tasks (a custom template folder may bring its own)."""
    for folder in ([Path(template_dir)] if template_dir else []) + [resource_dir("cards")]:
        path = folder / BLIMP_DESCRIPTIONS
        if path.is_file():
            return yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    raise MissingInputError(f"{BLIMP_DESCRIPTIONS} is missing from {resource_dir('cards')}; reinstall stentor-hub")


def write_card(run_dir: "str | os.PathLike | RunDir", out: str | os.PathLike, *, blimp: str | os.PathLike | None = None,
               card_config: str | os.PathLike | None = None, repo_id: str | None = None, checkpoint: str = "best",
               template_dir: str | os.PathLike | None = None, compare: "list[str | os.PathLike]" = ()) -> Path:
    """Render the card of a training run into ``out`` (``README.md``), sample outputs generated
    from the ``checkpoint`` weights; a failed render leaves any previous ``out`` as it was.
    Returns ``out``."""
    from stentor_hub.run_dir import tokenizer_folder

    facts = ModelCardFacts.from_run(run_dir, blimp=blimp, card_config=card_config, repo_id=repo_id,
                                    checkpoint=checkpoint, template_dir=template_dir, compare=compare)
    model_dir = RunDir.open(run_dir).checkpoint(checkpoint)
    facts.add_samples(model_dir, tokenizer_folder(model_dir))
    return write_text_atomic(out, render_card(facts, template_dir))


# --- rendering ---------------------------------------------------------------------------------


def render_card(facts: ModelCardFacts, template_dir: str | os.PathLike | None = None) -> str:
    """The README.md text: YAML front matter, then the template's Markdown. A ``template_dir``
    overrides any of our templates by name; the others still come from ``cards/``."""
    import jinja2

    env = card_environment(template_dir)
    env.filters["count"] = format_count
    env.filters["num"] = format_number
    env.filters["pct"] = format_percent
    env.filters["value"] = _format_value
    env.filters["a"] = indefinite_article
    env.filters["anchor"] = heading_anchor
    env.filters["python"] = repr  # a setting as a Python literal in the card's code
    front_matter = yaml.dump(facts.metadata(), Dumper=_NoAliasDumper, sort_keys=True, allow_unicode=True,
                             default_flow_style=False, width=1000)
    try:
        body = env.get_template(CARD_TEMPLATE).render(facts=facts, f=facts, cc=facts.card_config, blimp=facts.blimp,
                                                      prose={k: facts.card_config.get(k) for k in PROSE_SECTIONS})
    except jinja2.exceptions.SecurityError as e:
        raise CardError(f"card template does something the card sandbox does not allow ({e}); a template may "
                        "only format the facts it is given") from None
    except jinja2.UndefinedError as e:
        raise CardError(f"card template refers to a fact that does not exist: {e.message}") from None
    except jinja2.TemplateNotFound as e:
        raise CardError(f"card template {e.name!r} is not in the template folder (nor in cards/)") from None
    except jinja2.TemplateSyntaxError as e:
        raise CardError(f"card template {e.filename or e.name}:{e.lineno}: {e.message}") from None
    except (ValueError, TypeError) as e:  # a filter given a value of the wrong kind (|count on a text, ...)
        raise CardError(f"card template could not format a value of the run ({type(e).__name__}: {e}); check the "
                        "fields of run_manifest.json and the card config against what the template expects") from None
    body = place_author_sections(body, facts.card_config.get("sections") or [])
    body = re.sub(r"\n{3,}", "\n\n", body).strip() + "\n"
    return f"---\n{front_matter}---\n\n{body}"


def card_environment(template_dir: str | os.PathLike | None = None):
    """The Jinja environment cards render in: templates from ``template_dir`` (if given), then
    ``cards/``. A template may come from anyone, so it runs sandboxed (Jinja's
    ``SandboxedEnvironment``): no ``_`` attributes, no way to the environment (the token), no
    attribute of a path, file or module (so no reading files), and no template file outside the
    template folders (``..`` and symlinks leading out are refused)."""
    import jinja2
    import jinja2.sandbox

    class ConfinedLoader(jinja2.FileSystemLoader):
        def get_source(self, environment, template):
            source, filename, uptodate = super().get_source(environment, template)
            roots = [os.path.realpath(root) for root in self.searchpath]
            if not any(os.path.commonpath([os.path.realpath(filename), root]) == root for root in roots):
                raise jinja2.TemplateNotFound(template)
            return source, filename, uptodate

    class CardSandbox(jinja2.sandbox.SandboxedEnvironment):
        def is_safe_attribute(self, obj, attr, value):
            if isinstance(obj, (os.PathLike, io.IOBase, types.ModuleType)) or isinstance(value, types.ModuleType):
                return False
            return super().is_safe_attribute(obj, attr, value)

    loaders = [ConfinedLoader(str(resource_dir("cards")))]
    if template_dir is not None:
        if not Path(template_dir).is_dir():
            raise MissingInputError(f"template folder {template_dir} does not exist")
        loaders.insert(0, ConfinedLoader(str(template_dir)))
    return CardSandbox(loader=jinja2.ChoiceLoader(loaders), undefined=jinja2.StrictUndefined,
                       keep_trailing_newline=True, trim_blocks=True, lstrip_blocks=True, autoescape=False)


class _NoAliasDumper(yaml.SafeDumper):
    def ignore_aliases(self, data):  # no &id001 anchors in the front matter
        return True


def _format_value(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    if isinstance(value, int):  # sizes, steps, budgets: as every count on the card
        return format_count(value)
    if isinstance(value, (list, dict)):
        return json.dumps(value, sort_keys=True)
    return str(value)


def plot_curves(curves: list[CurvePoint], out_path: str | os.PathLike, title: str = "") -> Path:
    """``training_curves.svg``: train and eval loss against step, eval perplexity on a second axis.
    Deterministic: fixed SVG ids (``svg.hashsalt``), no date, text kept as text."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    out_path = Path(out_path)
    train = [(p.step, p.train_loss) for p in curves if p.train_loss is not None]
    evals = [(p.step, p.eval_loss, p.eval_ppl) for p in curves if p.eval_loss is not None]
    with matplotlib.rc_context({"svg.hashsalt": "stentor-hub", "svg.fonttype": "none", "font.size": 10}):
        fig, loss_ax = plt.subplots(figsize=(8, 4.5))
        try:
            if train:
                loss_ax.plot(*zip(*train), color="tab:blue", linewidth=1.2, label="train loss")
            loss_ax.plot([s for s, _, _ in evals], [l for _, l, _ in evals], color="tab:orange", marker="o",
                         markersize=3, linewidth=1.5, label="eval loss")
            loss_ax.set_xlabel("step")
            loss_ax.set_ylabel("cross-entropy loss")
            loss_ax.grid(True, alpha=0.3)
            ppl_ax = loss_ax.twinx()
            ppl = [(s, p) for s, _, p in evals if p is not None]
            if ppl:
                ppl_ax.plot(*zip(*ppl), color="tab:green", linestyle="--", linewidth=1.0, label="eval perplexity")
            ppl_ax.set_ylabel("eval perplexity")
            handles = loss_ax.get_legend_handles_labels()[0] + ppl_ax.get_legend_handles_labels()[0]
            loss_ax.legend(handles, [h.get_label() for h in handles], loc="upper right")
            if title:
                loss_ax.set_title(title)
            fig.tight_layout()
            svg = io.StringIO()
            fig.savefig(svg, format="svg", metadata={"Date": None})
            write_text_atomic(out_path, svg.getvalue())
        finally:
            plt.close(fig)
    return out_path
