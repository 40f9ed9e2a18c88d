"""Push a training run to the Hub while it trains, and pick it up again on another machine.

Free GPU machines disappear (a Kaggle session ends after 12 hours, a Colab runtime is recycled);
with ``hub.repo_id`` set, every push is one commit of a loadable model folder (weights, configs,
tokenizer with its remote code), ``training_curves.csv`` and the manifest so far, and, with the
``checkpoint`` strategies, the resumable Trainer checkpoint. The strategies mean what the
Trainer's ``hub_strategy`` means:

``end``              the final model, once, when training ends
``every_save``       the model at every checkpoint save
``checkpoint``       as ``every_save``, plus the latest checkpoint in ``last-checkpoint/``
``all_checkpoints``  as ``every_save``, plus every checkpoint in ``checkpoint-N/``

A save is snapshotted into a local folder by hard links (a copy where links are not possible),
which is all training waits for; a background thread pushes the snapshot. A failed push is
logged and retried at the next save with the newer snapshot; it never stops training. The token
comes from ``HF_TOKEN`` or ``hf auth login`` and is never logged.

``train --resume`` on a machine with no local checkpoint downloads the newest pushed resumable
checkpoint (:func:`download_last_checkpoint`).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import threading
from pathlib import Path

from transformers import TrainerCallback

from stentor_hub.run_dir import CURVES_FILE, MANIFEST_FILE, MODEL_FILES, RunDir
from stentor_hub.tokenizer import tokenizer_files

logger = logging.getLogger("stentor_hub.recipes.hub_push")

STRATEGIES = ("end", "every_save", "checkpoint", "all_checkpoints")
LAST_CHECKPOINT = "last-checkpoint"
RUN_FILES = (CURVES_FILE, MANIFEST_FILE)


def _link_or_copy(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, target)  # the Trainer may rotate the source away later; a link keeps the data
    except OSError:
        shutil.copy2(source, target)


def snapshot_for_push(target: Path, *, model_dir: Path, tokenizer_dir: Path, run_files: list[Path],
                      checkpoint_dir: Path | None = None, checkpoint_name: str | None = None,
                      best_dir: Path | None = None) -> Path:
    """Lay out in ``target`` what one push commits: the model files of ``model_dir``, the
    tokenizer files, the run files that exist, ``checkpoint_dir`` as ``checkpoint_name/`` and
    ``best_dir`` as ``best/`` (a resumed run goes on comparing against it)."""
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    for name in MODEL_FILES:
        if (model_dir / name).is_file():
            _link_or_copy(model_dir / name, target / name)
    for source in tokenizer_files(tokenizer_dir):
        _link_or_copy(source, target / source.name)
    for source in run_files:
        if source.is_file():
            shutil.copy2(source, target / source.name)  # still being appended to: a copy, not a link
    for folder, name in ((checkpoint_dir, checkpoint_name), (best_dir, "best")):
        if folder is not None and folder.is_dir():
            for source in sorted(folder.rglob("*")):
                if source.is_file():
                    _link_or_copy(source, target / name / source.relative_to(folder))
    return target


class HubPusher:
    """One background thread that pushes the newest snapshot; older queued snapshots are
    superseded. ``push_failures`` counts failed attempts (each logged, token redacted)."""

    def __init__(self, repo_id: str, *, private: bool = False, revision: str | None = None, token: str | None = None):
        self.repo_id, self.private, self.revision, self.token = repo_id, private, revision, token
        self._pending: tuple[Path, str, tuple[str, ...]] | None = None
        self._lock = threading.Condition()
        self._busy = False
        self._closed = False
        self.pushed: list[str] = []
        self.push_failures = 0
        self._thread = threading.Thread(target=self._run, name="stentor-hub-push", daemon=True)
        self._thread.start()

    def submit(self, folder: Path, message: str, delete_folders: tuple[str, ...] = ()) -> None:
        with self._lock:
            self._pending = (folder, message, delete_folders)
            self._lock.notify_all()

    def _run(self) -> None:
        from stentor_hub.publish import PublishError, push_folder

        while True:
            with self._lock:
                while self._pending is None and not self._closed:
                    self._lock.wait()
                if self._pending is None:
                    return
                folder, message, delete_folders = self._pending
                self._pending = None
                self._busy = True
            try:
                result = push_folder(folder, self.repo_id, token=self.token, private=self.private, revision=self.revision,
                                     commit_message=message, delete_folders=delete_folders)
                self.pushed.append(result.commit_oid)
                logger.info("pushed to %s: %s", self.repo_id, result.commit_url)
            except PublishError as e:  # already redacted
                self.push_failures += 1
                logger.warning("push to the Hub failed; training goes on and the next save retries: %s", e)
            except Exception as e:  # never let a push stop training
                self.push_failures += 1
                logger.warning("push to the Hub failed (%s); training goes on and the next save retries", type(e).__name__)
            finally:
                with self._lock:
                    self._busy = False
                    self._lock.notify_all()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until nothing is queued or being pushed; False on timeout."""
        with self._lock:
            return self._lock.wait_for(lambda: self._pending is None and not self._busy, timeout)

    def close(self, timeout: float | None = None) -> None:
        self.wait(timeout)
        with self._lock:
            self._closed = True
            self._lock.notify_all()
        self._thread.join(timeout)


class HubPushCallback(TrainerCallback):
    """Snapshots and pushes at every checkpoint save (strategies other than ``end``); the run's
    end is pushed by :meth:`push_final`, called once the final outputs and manifest are written."""

    def __init__(self, run_dir: Path, hub: dict, manifest_so_far=None):
        """``manifest_so_far(state)`` gives the manifest of the run up to ``state``."""
        self.run = RunDir(run_dir)
        self.hub = hub
        self.strategy = hub.get("strategy") or "every_save"
        self.manifest_so_far = manifest_so_far
        self._pusher: HubPusher | None = None
        self._count = 0

    @property
    def pusher(self) -> HubPusher:
        """Started on first use, so only the process that pushes (the main one) has a thread."""
        if self._pusher is None:
            self._pusher = HubPusher(self.hub["repo_id"], private=bool(self.hub.get("private")), revision=self.hub.get("revision"))
        return self._pusher

    @property
    def _push_root(self) -> Path:
        return self.run / ".hub-push"

    def _snapshot_dir(self) -> Path:
        self._count += 1
        return self._push_root / f"snapshot-{self._count}"

    def _run_files(self, state=None) -> list[Path]:
        files = [self.run.curves_file]
        if state is not None and self.manifest_so_far is not None:
            partial = self._push_root / MANIFEST_FILE
            partial.parent.mkdir(parents=True, exist_ok=True)
            partial.write_text(json.dumps(self.manifest_so_far(state), indent=2) + "\n")
            files.append(partial)
        elif self.run.manifest_file.is_file():
            files.append(self.run.manifest_file)
        return files

    def on_save(self, args, state, control, **kwargs):
        if self.strategy == "end" or not state.is_world_process_zero:
            return
        checkpoint = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        if not checkpoint.is_dir():
            return
        name = {"checkpoint": LAST_CHECKPOINT, "all_checkpoints": checkpoint.name}.get(self.strategy)
        self._cleanup_old_snapshots()
        snapshot = snapshot_for_push(
            self._snapshot_dir(), model_dir=checkpoint, tokenizer_dir=self.run.tokenizer, run_files=self._run_files(state),
            checkpoint_dir=checkpoint if name else None, checkpoint_name=name, best_dir=self.run.best if name else None,
        )
        deletes = (LAST_CHECKPOINT, "best") if name else ()
        self.pusher.submit(snapshot, f"Training in progress: step {state.global_step}", deletes)

    def _cleanup_old_snapshots(self) -> None:
        """Snapshots that are neither queued nor being pushed (all but the newest two)."""
        root = self._push_root
        if not root.is_dir():
            return
        snapshots = sorted((p for p in root.glob("snapshot-*") if p.name.split("-")[1].isdigit()), key=lambda p: int(p.name.split("-")[1]))
        for old in snapshots[:-2]:
            shutil.rmtree(old, ignore_errors=True)

    def push_final(self, step: int, timeout: float | None = None) -> None:
        """Push ``final/`` with the finished manifest and curves (and ``best/`` beside the
        checkpoints, for the checkpoint strategies), wait for every push, remove the snapshots."""
        keeps_checkpoints = self.strategy in ("checkpoint", "all_checkpoints")
        snapshot = snapshot_for_push(self._snapshot_dir(), model_dir=self.run.final, tokenizer_dir=self.run.tokenizer,
                                     run_files=self._run_files(), best_dir=self.run.best if keeps_checkpoints else None)
        self.pusher.submit(snapshot, f"End of training: step {step}", ("best",) if keeps_checkpoints else ())
        self.pusher.close(timeout)
        shutil.rmtree(self._push_root, ignore_errors=True)


def download_last_checkpoint(repo_id: str, checkpoints_dir: Path, revision: str | None = None) -> Path | None:
    """Download the newest resumable checkpoint pushed to ``repo_id`` (``last-checkpoint/`` or
    the highest ``checkpoint-N/``) into ``checkpoints_dir/checkpoint-STEP``, with the run's
    curves and ``best/`` beside ``checkpoints_dir``; None when the repository holds none."""
    from huggingface_hub import HfApi, snapshot_download

    api = HfApi(endpoint=os.environ.get("HF_ENDPOINT") or None)
    files = api.list_repo_files(repo_id, revision=revision)
    folders = {f.split("/", 1)[0] for f in files if "/" in f and f.endswith("/trainer_state.json")}
    numbered = sorted((int(f.split("-")[1]), f) for f in folders if f.startswith("checkpoint-") and f.split("-")[1].isdigit())
    folder = LAST_CHECKPOINT if LAST_CHECKPOINT in folders else (numbered[-1][1] if numbered else None)
    if folder is None:
        return None
    checkpoints_dir = Path(checkpoints_dir)
    download = checkpoints_dir.parent / ".hub-download"
    shutil.rmtree(download, ignore_errors=True)
    snapshot_download(repo_id, revision=revision, local_dir=str(download), allow_patterns=[f"{folder}/*", "best/*", *RUN_FILES])
    step = json.loads((download / folder / "trainer_state.json").read_text())["global_step"]
    target = checkpoints_dir / f"checkpoint-{step}"
    checkpoints_dir.mkdir(parents=True, exist_ok=True)
    os.replace(download / folder, target)
    run_dir = checkpoints_dir.parent
    for name in (CURVES_FILE, "best"):
        if (download / name).exists() and not (run_dir / name).exists():
            os.replace(download / name, run_dir / name)
    shutil.rmtree(download, ignore_errors=True)
    return target
