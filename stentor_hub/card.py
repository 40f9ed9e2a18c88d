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
from stentor_hub.run_dir import CurvePoint, RunDir, RunManifest

CARD_TEMPLATE = "model_card.md.j2"
BLIMP_DESCRIPTIONS = "blimp_tasks.yaml"
DEFAULT_CARD_CONFIG = "card_config.yaml"
# The author's prose, in the order the card shows it. Anything else in the card config is an error.
PROSE_SECTIONS = ("summary", "intended_uses", "limitations", "sample_outputs", "notices", "citation")
METADATA_KEYS = ("model_name", "license", "language", "library_name", "pipeline_tag", "tags", "datasets", "widget",
                 "base_model", "eval_dataset")
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

    YAML: metadata keys and prose keys at the top level. Markdown: the metadata as YAML front
    matter, then one ``## Heading`` per prose section (``## Intended uses`` -> ``intended_uses``)."""
    config = read_yaml_mapping(resource_dir("cards") / DEFAULT_CARD_CONFIG, "card config", CardError)
    if path is None:
        return config
    path = Path(path)
    if not path.is_file():
        raise MissingInputError(f"card config {path} does not exist")
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() in (".md", ".markdown"):
        user, body = {}, text
        match = re.match(r"^---\s*\n(.*?)\n---\s*(\n|$)", text, re.S)
        if match:
            try:
                user, body = yaml.safe_load(match.group(1)) or {}, text[match.end():]
            except yaml.YAMLError as e:
                raise CardError(f"card config {path}: the front matter is not valid YAML: {e}") from None
        for heading, content in _markdown_sections(body, path):
            user[re.sub(r"[^a-z0-9]+", "_", heading.lower()).strip("_")] = content
    else:
        user = read_yaml_mapping(path, "card config", CardError)
    if not isinstance(user, dict):
        raise CardError(f"card config {path} must be a mapping of metadata and prose sections")
    unknown = sorted(set(user) - set(PROSE_SECTIONS) - set(METADATA_KEYS))
    if unknown:
        raise CardError(f"card config {path}: unknown keys {unknown}; metadata keys are {list(METADATA_KEYS)}, "
                         f"prose sections are {list(PROSE_SECTIONS)}")
    for key in PROSE_SECTIONS:
        if key in user and user[key] is not None and not isinstance(user[key], str):
            raise CardError(f"card config {path}: '{key}' must be text (Markdown), got {type(user[key]).__name__}")
    check_card_metadata(user, path)
    return {**config, **user}


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
    sections, heading, lines = [], None, []
    for line in body.splitlines():
        if line.startswith("## "):
            if heading is not None:
                sections.append((heading, "\n".join(lines).strip()))
            heading, lines = line[3:].strip(), []
        elif heading is None and line.strip():
            raise CardError(f"card config {path}: text before the first '## Section' heading: {line.strip()[:60]!r}")
        else:
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
    parameters: list[ParameterGroup] = field(default_factory=list)
    result_rows: list[ResultRow] = field(default_factory=list)

    @classmethod
    def from_run(cls, run_dir: "str | os.PathLike | RunDir", *, blimp: str | os.PathLike | None = None,
                 card_config: str | os.PathLike | None = None, repo_id: str | None = None,
                 checkpoint: str = "best", template_dir: str | os.PathLike | None = None) -> "ModelCardFacts":
        """Read a training output folder (``RUN_DIR``). Raises :class:`MissingInputError` /
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
        return facts

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
    def eval_sources(self) -> list[str]:
        """Empty when the evaluation blocks were held out of the training stream."""
        return [_describe_source(s) for s in _source_list(self.manifest.data.get("eval_sources"))]

    @property
    def hours(self) -> float:
        return float(self.manifest.training.get("wall_time_seconds") or 0.0) / 3600.0

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


def blimp_descriptions(template_dir: str | os.PathLike | None = None) -> dict[str, str]:
    """Our one-line descriptions of the BLiMP tasks (a custom template folder may bring its own)."""
    for folder in ([Path(template_dir)] if template_dir else []) + [resource_dir("cards")]:
        path = folder / BLIMP_DESCRIPTIONS
        if path.is_file():
            return yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    raise MissingInputError(f"{BLIMP_DESCRIPTIONS} is missing from {resource_dir('cards')}; reinstall stentor-hub")


def write_card(run_dir: "str | os.PathLike | RunDir", out: str | os.PathLike, *, blimp: str | os.PathLike | None = None,
               card_config: str | os.PathLike | None = None, repo_id: str | None = None, checkpoint: str = "best",
               template_dir: str | os.PathLike | None = None) -> Path:
    """Render the card of a training run into ``out`` (``README.md``); a failed render leaves any
    previous ``out`` as it was. Returns ``out``."""
    facts = ModelCardFacts.from_run(run_dir, blimp=blimp, card_config=card_config, repo_id=repo_id,
                                    checkpoint=checkpoint, template_dir=template_dir)
    return write_text_atomic(out, render_card(facts, template_dir))


# --- rendering ---------------------------------------------------------------------------------


def render_card(facts: ModelCardFacts, template_dir: str | os.PathLike | None = None) -> str:
    """The README.md text: YAML front matter, then the template's Markdown. A ``template_dir``
    overrides any of our templates by name; the others still come from ``cards/``."""
    import jinja2

    env = card_environment(template_dir)
    env.filters["count"] = lambda n: f"{int(n):,}"
    env.filters["num"] = lambda x, digits=4: "–" if x is None else f"{float(x):.{digits}f}"
    env.filters["pct"] = lambda x: f"{float(x):.1f}%"
    env.filters["value"] = _format_value
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
