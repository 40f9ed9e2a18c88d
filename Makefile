# Two commands for a fresh machine:
#   make quickstart   set up .venv and run the main job end to end
#   make test         set up .venv (transformers 5.x) and .venv-tf4 (transformers 4.57), run the tests
# torch is installed first, pinned to the CPU wheel: an unpinned torch pulls a multi-GB CUDA build.

PYTHON ?= python3
TORCH ?= torch==2.13.0
VENV ?= .venv
VENV_TF4 ?= .venv-tf4
PYTEST_ARGS ?=

.PHONY: install quickstart test bench-tokenizer bench-eval bench-train clean

$(VENV)/.ready:
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet $(TORCH)
	$(VENV)/bin/pip install --quiet ".[test]"
	touch $@

# transformers 4.57 (the last 4.x) for the tokenizer tests; the project itself without its
# dependencies, which would pull transformers 5.
$(VENV_TF4)/.ready:
	$(PYTHON) -m venv $(VENV_TF4)
	$(VENV_TF4)/bin/pip install --quiet --upgrade pip
	$(VENV_TF4)/bin/pip install --quiet $(TORCH)
	$(VENV_TF4)/bin/pip install --quiet "transformers==4.57.6" datasets safetensors jinja2 pyyaml pytest hypothesis
	touch $@

# Always reinstall the project itself (as a wheel, not editable) so the tests run what users get.
install: $(VENV)/.ready
	$(VENV)/bin/pip install --quiet --no-deps --force-reinstall .

quickstart: install
	$(VENV)/bin/stentor-hub quickstart

test: install $(VENV_TF4)/.ready
	$(VENV_TF4)/bin/pip install --quiet --no-deps --force-reinstall .
	$(VENV)/bin/pytest $(PYTEST_ARGS)
	$(VENV_TF4)/bin/pytest -p no:cacheprovider tests/test_tokenizer.py tests/test_tokenmonster.py $(PYTEST_ARGS)

bench-tokenizer: install
	$(VENV)/bin/python benchmarks/tokenizer/bench.py

bench-eval: install
	$(VENV)/bin/python benchmarks/eval/bench_blimp.py

bench-train: install
	$(VENV)/bin/python benchmarks/train/bench_train.py

clean:
	rm -rf $(VENV) $(VENV_TF4) build dist .pytest_cache
