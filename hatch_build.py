"""Wheel build hook: compile the native TokenMonster scanner (stentor_hub/_native/_tokenmonster.c)
into the wheel where a C compiler works; where none does, build a pure-Python wheel and say so
in one line. ``STENTOR_NATIVE=0`` skips the compiled engine on purpose; ``STENTOR_NATIVE=1``
makes a failed compile an error (what a wheel-building CI wants)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

from hatchling.builders.hooks.plugin.interface import BuildHookInterface

SOURCE = Path("stentor_hub") / "_native" / "_tokenmonster.c"
MODULE = "stentor_hub._native._tokenmonster"


def _compile_with_setuptools(root: Path, out_dir: Path) -> Path:
    """setuptools' build_ext: honours CC/CFLAGS and knows MSVC (Windows wheels)."""
    from setuptools import Distribution, Extension

    extension = Extension(MODULE, [str(SOURCE)])  # Python's own flags (-O3 on a usual CPython build)
    dist = Distribution({"name": "stentor-hub-native", "ext_modules": [extension]})
    cmd = dist.get_command_obj("build_ext")
    cmd.build_lib = str(out_dir / "lib")
    cmd.build_temp = str(out_dir / "temp")
    cwd = os.getcwd()
    os.chdir(root)
    try:
        cmd.ensure_finalized()
        cmd.run()
        return Path(cmd.get_ext_fullpath(MODULE)).resolve()
    finally:
        os.chdir(cwd)


def _compile_with_cc(root: Path, out_dir: Path) -> Path:
    """No setuptools: the compiler and flags Python was built with (POSIX)."""
    cc = os.environ.get("CC") or sysconfig.get_config_var("CC")
    if not cc:
        raise RuntimeError("no C compiler configured")
    target = out_dir / ("_tokenmonster" + sysconfig.get_config_var("EXT_SUFFIX"))
    command = cc.split() + ["-O3", "-fPIC", "-shared", f"-I{sysconfig.get_paths()['include']}",
                            str(root / SOURCE), "-o", str(target)]
    if sys.platform == "darwin":
        command += ["-undefined", "dynamic_lookup"]
    subprocess.run(command, check=True, capture_output=True)
    return target


class NativeBuildHook(BuildHookInterface):
    PLUGIN_NAME = "custom"

    def initialize(self, version: str, build_data: dict) -> None:
        if self.target_name != "wheel" or version == "editable":
            return
        wanted = os.environ.get("STENTOR_NATIVE", "").strip()
        if wanted == "0":
            print("stentor-hub: STENTOR_NATIVE=0, building without the native TokenMonster engine", file=sys.stderr)
            return
        root = Path(self.root)
        self._tmp = Path(tempfile.mkdtemp(prefix="stentor-native-"))
        try:
            try:
                import setuptools  # noqa: F401
            except ImportError:
                built = _compile_with_cc(root, self._tmp)
            else:
                built = _compile_with_setuptools(root, self._tmp)
        except Exception as error:  # any failure to compile: fall back to the pure engine
            if wanted == "1":
                raise RuntimeError(f"STENTOR_NATIVE=1 but the native TokenMonster engine did not compile: {error}") from error
            reason = str(error).strip().splitlines()[-1] if str(error).strip() else type(error).__name__
            if len(reason) > 100:  # a failed command line: its end says how it failed
                reason = "..." + reason[-97:]
            print(f"stentor-hub: no working C compiler ({reason}); installing the pure-Python TokenMonster engine only",
                  file=sys.stderr)
            return
        build_data["force_include"][str(built)] = f"stentor_hub/_native/{built.name}"
        build_data["pure_python"] = False
        build_data["infer_tag"] = True

    def finalize(self, version: str, build_data: dict, artifact_path: str) -> None:
        tmp = getattr(self, "_tmp", None)
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
