"""A Gradio Space that demos published models: stage it, check it, push it in one commit.

    stentor-hub space MODEL_DIR_OR_REPO [MODEL_DIR_OR_REPO ...] --out DIR   # stage only
    stentor-hub space OWNER/MODEL --out DIR --push OWNER/SPACE [--dry-run]   # stage, check, push
    stentor-hub publish RUN_DIR --repo-id OWNER/MODEL --space OWNER/SPACE     # model, then its Space

The Hub's inference widget cannot run a model whose tokenizer is remote code, so a Stentor2
repository is tried in a Space instead. The staged folder holds:

``app.py``            the Gradio app (``cards/space/app.py``): generation, token probabilities,
                      a temperature sweep and, with two models or more, head to head; it imports
                      gradio, torch and transformers only, never stentor-hub
``space.json``        the models it loads (Hub repo ids, or folders for a local run) and its title
``requirements.txt``  the versions the app is tested with (:data:`TESTED_VERSIONS`)
``README.md``         the Space metadata the Hub reads (``sdk: gradio``, ``sdk_version``,
                      ``app_file``, ``models``, ``title``, ``short_description``) and a description

Staging needs neither gradio nor the network; running the app needs ``pip install stentor-hub[space]``
(or the Space's requirements). Pushing follows the rules of :func:`stentor_hub.publish.push_folder`:
the token from ``HF_TOKEN`` or the login, never printed.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from stentor_hub._resources import resource_dir
from stentor_hub.errors import PublishError
from stentor_hub.helpers import build_folder, check_repo_id, looks_like_hub_id
from stentor_hub.publish import PushResult, push_folder

SPACE_TEMPLATES = "space"  # under cards/: app.py and README.md.j2
APP_FILE = "app.py"
SPACE_FILES = (APP_FILE, "space.json", "requirements.txt", "README.md")
SPACE_KIND = "Space staging"  # the kind in the folder marker of a staged Space
# What the app is tested with (tests/test_space.py checks these against requirements/lock.txt).
# Gradio is the Space's sdk_version, which the Hub installs itself; the rest go to requirements.txt.
TESTED_VERSIONS = {"gradio": "6.31.0", "torch": "2.13.0", "transformers": "5.24.0", "numpy": "2.4.6"}
SHORT_DESCRIPTION_LIMIT = 60  # characters the Hub accepts for short_description
DEFAULT_ENDPOINT = "https://huggingface.co"


@dataclass(frozen=True)
class SpaceModel:
    """One model the Space offers: ``source`` is a Hub repo id or an absolute folder path."""

    source: str
    label: str
    local: bool

    @property
    def url(self) -> str | None:
        return None if self.local else f"{hub_endpoint()}/{self.source}"


def hub_endpoint() -> str:
    """The Hub links point at: ``HF_ENDPOINT`` (read now, as push_folder does) or huggingface.co."""
    return (os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")


def space_url(space_id: str) -> str:
    """The page of the Space ``OWNER/NAME`` on the Hub."""
    return f"{hub_endpoint()}/spaces/{space_id}"


def resolve_models(references: list[str]) -> list[SpaceModel]:
    """Each reference as a :class:`SpaceModel`: an existing folder that loads with the Auto classes
    (``config.json`` and ``tokenizer_config.json``), else a Hub repo id ``OWNER/NAME``."""
    if not references:
        raise ValueError("give at least one model: a model folder or a Hub repo id OWNER/NAME")
    models, labels = [], set()
    for reference in references:
        path = Path(reference)
        if path.is_dir():
            if (path / "best").is_dir() and (path / "tokenizer").is_dir():
                raise ValueError(f"{path} is a training run, not a model folder; stage its repository first "
                                 f"(stentor-hub publish {path} --repo-id OWNER/NAME --dry-run --staging DIR) and pass DIR")
            missing = [name for name in ("config.json", "tokenizer_config.json") if not (path / name).is_file()]
            if missing:
                raise ValueError(f"model folder {path} has no {' or '.join(missing)}; pass a folder that "
                                 "AutoModelForCausalLM and AutoTokenizer load (a staged repository) or a Hub repo id")
            source, label, local = str(path.resolve()), path.resolve().name, True
        elif looks_like_hub_id(reference):
            source, label, local = reference, reference, False
        else:
            raise ValueError(f"{reference!r} is neither a model folder nor a Hub repo id OWNER/NAME")
        unique, n = label, 2
        while unique in labels:  # two folders of the same name still get two entries in the menus
            unique, n = f"{label} ({n})", n + 1
        labels.add(unique)
        models.append(SpaceModel(source, unique, local))
    return models


def default_short_description(models: list[SpaceModel]) -> str:
    modes = "Sample, token probabilities, temperatures"
    return f"{modes}, head to head" if len(models) >= 2 else f"{modes} of a tiny LM"


# --- staging -----------------------------------------------------------------------------------


def render_space_readme(models: list[SpaceModel], title: str, short_description: str) -> str:
    """The Space's README.md: YAML front matter the Hub reads, then what the demo does."""
    import jinja2
    import yaml

    metadata = {
        "title": title, "emoji": "🔬", "colorFrom": "indigo", "colorTo": "blue", "sdk": "gradio",
        "sdk_version": TESTED_VERSIONS["gradio"], "app_file": APP_FILE, "pinned": False,
        "short_description": short_description,
        "models": [m.source for m in models if not m.local],
    }
    metadata = {k: v for k, v in metadata.items() if v != []}  # a local-only Space lists no Hub models
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(resource_dir("cards") / SPACE_TEMPLATES)),
                             undefined=jinja2.StrictUndefined, keep_trailing_newline=True, trim_blocks=True,
                             lstrip_blocks=True, autoescape=False)
    body = env.get_template("README.md.j2").render(title=title, models=models, versions=TESTED_VERSIONS)
    front_matter = yaml.safe_dump(metadata, sort_keys=False, allow_unicode=True, width=1000)
    return f"---\n{front_matter}---\n\n{body.strip()}\n"


def stage_space(models: list[str], out_dir: str | os.PathLike, *, title: str | None = None,
                short_description: str | None = None) -> Path:
    """Write a Space folder for ``models`` (model folders or Hub repo ids) into ``out_dir``:
    ``app.py``, ``space.json``, ``requirements.txt`` and ``README.md``.

    Built beside ``out_dir`` and moved into place, so a failure leaves nothing half-written. An
    existing ``out_dir`` is replaced only if it is empty or a previous Space staging holding only
    the files stentor-hub wrote (its folder marker lists them). Needs neither gradio nor the
    network. Returns ``out_dir``."""
    resolved = resolve_models(models)
    out_dir = Path(out_dir)
    title = title or (f"{resolved[0].label.split('/')[-1]} demo" if len(resolved) == 1 else "Stentor2 models head to head")
    short_description = short_description or default_short_description(resolved)
    if len(short_description) > SHORT_DESCRIPTION_LIMIT:
        raise PublishError(f"--short-description has {len(short_description)} characters; the Hub accepts at most "
                         f"{SHORT_DESCRIPTION_LIMIT}")
    readme = render_space_readme(resolved, title, short_description)
    config = {"title": title, "description": short_description,
              "models": [{"label": m.label, "source": m.source} for m in resolved]}
    requirements = "".join(f"{name}=={version}\n" for name, version in TESTED_VERSIONS.items() if name != "gradio")
    with build_folder(out_dir, kind=SPACE_KIND, flag="--out") as tmp:
        shutil.copy2(resource_dir("cards") / SPACE_TEMPLATES / APP_FILE, tmp / APP_FILE)
        (tmp / "space.json").write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        (tmp / "requirements.txt").write_text(
            f"# tested with these versions and gradio=={TESTED_VERSIONS['gradio']} (the sdk_version in README.md)\n"
            + requirements, encoding="utf-8")
        (tmp / "README.md").write_text(readme, encoding="utf-8")
    return out_dir


# --- checks ------------------------------------------------------------------------------------


@dataclass
class SpaceCheck:
    title: str
    sdk_version: str
    models: list[SpaceModel]


def check_space(folder: str | os.PathLike, *, for_push: bool = False) -> SpaceCheck:
    """Check a staged Space before anything leaves the machine: every file is there, ``README.md``
    parses as a Space card with ``sdk: gradio``, ``app.py`` compiles, and (``for_push``) every model
    is a Hub repo id, since a Space on the Hub cannot read a local folder. Raises
    :class:`PublishError` naming the failed check."""
    from huggingface_hub import SpaceCard

    folder = Path(folder)
    missing = [name for name in SPACE_FILES if not (folder / name).is_file()]
    if missing:
        raise PublishError(f"the staged Space {folder} has no {', '.join(missing)}; stage it again with stentor-hub space")
    try:
        card = SpaceCard((folder / "README.md").read_text(encoding="utf-8"), ignore_metadata_errors=False)
    except Exception as e:
        raise PublishError(f"the Space's README.md metadata does not parse with huggingface_hub ({type(e).__name__}: {e})") from None
    data = card.data
    if data.sdk != "gradio" or not data.sdk_version or data.app_file != APP_FILE:
        raise PublishError(f"the Space's README.md must say sdk: gradio, sdk_version and app_file: {APP_FILE}; "
                           f"it says sdk {data.sdk!r}, sdk_version {data.sdk_version!r}, app_file {data.app_file!r}")
    try:
        compile((folder / APP_FILE).read_bytes(), str(folder / APP_FILE), "exec")
    except SyntaxError as e:
        raise PublishError(f"the Space's {APP_FILE} does not compile: {e}") from None
    config = json.loads((folder / "space.json").read_text(encoding="utf-8"))
    models = [SpaceModel(m["source"], m["label"], Path(m["source"]).is_absolute()) for m in config["models"]]
    local = [m.source for m in models if m.local]
    if for_push and local:
        raise PublishError(f"a Space on the Hub cannot load the local folder {local[0]}; publish the model first "
                           "(stentor-hub publish RUN_DIR --repo-id OWNER/NAME) and pass OWNER/NAME to stentor-hub space")
    if sorted(data.models or []) != sorted(m.source for m in models if not m.local):
        raise PublishError("the Space's README.md models: list and space.json disagree; stage it again")
    return SpaceCheck(title=config["title"], sdk_version=data.sdk_version, models=models)


# --- push --------------------------------------------------------------------------------------


def push_space(folder: str | os.PathLike, space_id: str, *, token: str | None = None, private: bool = False,
               commit_message: str | None = None) -> PushResult:
    """Check the staged Space (:func:`check_space` with ``for_push``), then create the Space
    ``space_id`` (sdk gradio) if needed and commit the folder in one commit. Raises
    :class:`PublishError` (token redacted) when a check or the push fails."""
    check_repo_id(space_id, PublishError, "the Space id")
    check_space(folder, for_push=True)
    return push_folder(folder, space_id, token=token, private=private, repo_type="space", space_sdk="gradio",
                       commit_message=commit_message or f"Stage the {space_id.split('/')[1]} Space with stentor-hub")
