# Two commands for a fresh machine:
#   make quickstart   set up .venv and run the main job end to end
#   make test         set up .venv (transformers 5.x) and .venv-tf4 (transformers 4.57), run the tests
#                     (tests/test_space.py also needs a Chromium: `apt-get install chromium`, as .ci/run does)
# torch is installed first, pinned to the CPU wheel: an unpinned torch pulls a multi-GB CUDA build.
# Every other package comes at the exact version of a lock file (requirements/lock*.txt), so an
# upstream release cannot change what CI tests. `make lock` regenerates them; `make test-latest`
# tries the newest releases without touching them.

PYTHON ?= python3
TORCH ?= torch==2.13.0
VENV ?= .venv
VENV_TF4 ?= .venv-tf4
VENV_LATEST ?= .venv-latest
LOCK ?= requirements/lock.txt
LOCK_TF4 ?= requirements/lock-tf4.txt
PYTEST_ARGS ?=
# what the transformers-4.57 environment needs besides the project (whose own dependencies would
# pull transformers 5)
TF4_PACKAGES = "transformers==4.57.6" datasets safetensors jinja2 pyyaml numpy pytest hypothesis
# the tests that go through Vocab's default engine, run a second time on the pure-Python one (the
# first run uses the compiled one, which `make install` builds; the differential tests in
# test_tokenmonster_engines.py name both engines explicitly and run once)
ENGINE_TESTS = tests/test_tokenmonster.py tests/test_tokenizer.py tests/test_tokenmonster_engines.py::test_engine_selection
# the tests that meet the dependencies' public surface: tokenizer and streaming, publish, quickstart
LATEST_TESTS = tests/test_tokenizer.py tests/test_tokenmonster.py tests/test_publish.py tests/test_quickstart.py

.PHONY: install quickstart test test-latest lock bench-tokenizer bench-eval bench-train bench-train-gpu bench-data clean

$(VENV)/.ready: $(LOCK)
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet $(TORCH)
	$(VENV)/bin/pip install --quiet -c $(LOCK) ".[test,onnx,space]"
	touch $@

$(VENV_TF4)/.ready: $(LOCK_TF4)
	$(PYTHON) -m venv $(VENV_TF4)
	$(VENV_TF4)/bin/pip install --quiet --upgrade pip
	$(VENV_TF4)/bin/pip install --quiet $(TORCH)
	$(VENV_TF4)/bin/pip install --quiet -c $(LOCK_TF4) $(TF4_PACKAGES)
	touch $@

# Always reinstall the project itself (as a wheel, not editable) so the tests run what users get.
install: $(VENV)/.ready
	$(VENV)/bin/pip install --quiet --no-deps --force-reinstall .

quickstart: install
	$(VENV)/bin/stentor-hub quickstart

test: install $(VENV_TF4)/.ready
	$(VENV_TF4)/bin/pip install --quiet --no-deps --force-reinstall .
	$(VENV)/bin/pytest $(PYTEST_ARGS)
	STENTOR_TOKENMONSTER=python $(VENV)/bin/pytest -p no:cacheprovider $(ENGINE_TESTS) $(PYTEST_ARGS)
	$(VENV_TF4)/bin/pytest -p no:cacheprovider tests/test_tokenizer.py tests/test_tokenmonster.py $(PYTEST_ARGS)

# The newest transformers, huggingface_hub, datasets and accelerate, in a fresh environment of
# their own, on the tests that meet their public surface. Not part of CI: run it before each
# release and whenever one of them ships; when it passes, `make lock` moves the pins forward.
test-latest:
	rm -rf $(VENV_LATEST)
	$(PYTHON) -m venv $(VENV_LATEST)
	$(VENV_LATEST)/bin/pip install --quiet --upgrade pip
	$(VENV_LATEST)/bin/pip install --quiet $(TORCH)
	$(VENV_LATEST)/bin/pip install --quiet --upgrade ".[test]" transformers huggingface_hub datasets accelerate
	$(VENV_LATEST)/bin/pip list 2>/dev/null | grep -iE "^(transformers|huggingface.hub|datasets|accelerate) "
	$(VENV_LATEST)/bin/pytest -p no:cacheprovider $(LATEST_TESTS) $(PYTEST_ARGS)

# Regenerate both lock files from fresh, unconstrained resolutions (newest releases within
# pyproject.toml's ranges), then run `make test`. The local +cpu tag of torch is dropped: the
# pin is the version, the CPU wheel comes from $(TORCH) installed first.
lock:
	rm -rf .venv-lock .venv-lock-tf4
	$(PYTHON) -m venv .venv-lock
	.venv-lock/bin/pip install --quiet --upgrade pip
	.venv-lock/bin/pip install --quiet $(TORCH)
	.venv-lock/bin/pip install --quiet ".[test,onnx,space]"
	.venv-lock/bin/pip freeze --exclude stentor-hub | sed 's/+cpu$$//' > $(LOCK)
	$(PYTHON) -m venv .venv-lock-tf4
	.venv-lock-tf4/bin/pip install --quiet --upgrade pip
	.venv-lock-tf4/bin/pip install --quiet $(TORCH)
	.venv-lock-tf4/bin/pip install --quiet $(TF4_PACKAGES)
	.venv-lock-tf4/bin/pip freeze --exclude stentor-hub | sed 's/+cpu$$//' > $(LOCK_TF4)
	rm -rf .venv-lock .venv-lock-tf4

bench-tokenizer: install
	$(VENV)/bin/python benchmarks/tokenizer/bench.py

bench-eval: install
	$(VENV)/bin/python benchmarks/eval/bench_blimp.py

bench-train: install
	$(VENV)/bin/python benchmarks/train/bench_train.py

# the 30M recipe on a GPU: prepared shards, 300 fp16 steps with the T4 recipe (add ARGS="--steps 3" on a CPU)
bench-train-gpu: install
	$(VENV)/bin/python benchmarks/train/gpu_run.py $(ARGS)

bench-data: install
	$(VENV)/bin/python benchmarks/data/bench_data.py

clean:
	rm -rf $(VENV) $(VENV_TF4) $(VENV_LATEST) build dist .pytest_cache
