"""The wheel carries what a user needs besides the Python package: the remote code that
travels to the Hub, the card templates and the recipe configs."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import stentor_hub
from stentor_hub._resources import resource_dir

REPO = Path(__file__).resolve().parents[1]


def test_wheel_contents(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path), str(REPO)],
        capture_output=True, text=True, timeout=600,
    )
    if result.returncode != 0 and "No module named 'hatchling'" in result.stderr:
        result = subprocess.run(
            [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(REPO)],
            capture_output=True, text=True, timeout=600,
        )
    assert result.returncode == 0, result.stderr[-2000:]
    wheel = next(tmp_path.glob("stentor_hub-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    for folder in ("remote_code", "cards", "recipes"):
        source = {p.relative_to(REPO / folder).as_posix() for p in (REPO / folder).rglob("*") if p.is_file() and "__pycache__" not in p.parts}
        packaged = {n.split(f"stentor_hub/_data/{folder}/", 1)[1] for n in names if n.startswith(f"stentor_hub/_data/{folder}/")}
        assert source and source <= packaged, (folder, source - packaged)
    assert any(n.endswith("entry_points.txt") for n in names)
    entry_points = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    assert "stentor-hub = stentor_hub.cli:main" in entry_points


def test_installed_package_finds_its_data():
    remote = resource_dir("remote_code")
    assert (remote / "tokenmonster.py").is_file() and (remote / "tokenization_stentor.py").is_file()
    # the library imports the very files that travel to the Hub
    from stentor_hub.tokenmonster import Vocab

    assert Path(sys.modules[Vocab.__module__].__file__).resolve() == (remote / "tokenmonster.py").resolve()
    assert Path(stentor_hub.__file__).parent in remote.parents or remote.parent == Path(stentor_hub.__file__).parent.parent


def test_ordinary_permissions(tmp_path):
    import os
    import stat

    from stentor_hub.helpers import ordinary_permissions

    folder = tmp_path / "out"
    (folder / "sub").mkdir(parents=True)
    (folder / "sub" / "model.safetensors").write_bytes(b"x")
    os.chmod(folder / "sub" / "model.safetensors", 0o600)
    os.chmod(folder, 0o700)
    umask = os.umask(0o022)
    try:
        ordinary_permissions(folder)
    finally:
        os.umask(umask)
    assert stat.S_IMODE(os.stat(folder).st_mode) == 0o755
    assert stat.S_IMODE(os.stat(folder / "sub" / "model.safetensors").st_mode) == 0o644


def test_install_folder_replaces_whole_folders(tmp_path):
    from stentor_hub.helpers import install_folder

    destination = tmp_path / "out"
    destination.mkdir()
    (destination / "old.txt").write_text("old")
    written = tmp_path / ".out.tmp"
    written.mkdir()
    (written / "new.txt").write_text("new")
    install_folder(written, destination)
    assert [p.name for p in destination.iterdir()] == ["new.txt"]
    assert not written.exists() and [p.name for p in tmp_path.iterdir()] == ["out"]  # nothing set aside is left


def _locked(path: Path) -> dict[str, str]:
    pins = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, version = line.partition("==")
            pins[name.strip().lower().replace("_", "-")] = version.strip()
    return pins


def test_supported_ranges_are_the_tested_ones():
    """pyproject's range for the libraries whose releases change our behaviour starts at the
    locked (CI-tested) version and stops below the next major version (make test-latest);
    every package of both environments is locked to an exact version."""
    import tomllib

    from packaging.requirements import Requirement

    lock, lock_tf4 = _locked(REPO / "requirements" / "lock.txt"), _locked(REPO / "requirements" / "lock-tf4.txt")
    assert lock_tf4["transformers"].startswith("4.57.")
    requirements = {}
    for spec in tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]:
        req = Requirement(spec)
        requirements[req.name.lower().replace("_", "-")] = req.specifier
    for name in requirements:
        assert name in lock, f"{name} is a dependency but not in requirements/lock.txt"
        assert requirements[name].contains(lock[name]), (name, lock[name], str(requirements[name]))
    for name in ("transformers", "huggingface-hub", "datasets", "accelerate"):
        major, minor = lock[name].split(".")[:2]
        assert set(str(requirements[name]).split(",")) == {f">={major}.{minor}", f"<{int(major) + 1}"}, (name, lock[name])
