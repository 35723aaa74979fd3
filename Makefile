# edgegan: `make demo` to see it work, `make test` to check it.
VENV   ?= .venv
PYTHON ?= python3
PY      = $(VENV)/bin/python
PIP     = $(PY) -m pip --disable-pip-version-check -q
STAMP   = $(VENV)/.installed

.PHONY: install test demo lint bench clean

install: $(STAMP)

# Idempotent: re-runs only when the venv is missing or the dependencies changed.
# torch goes in first from its pinned CPU wheel; the constraints keep every later install
# from replacing it with a CUDA build or pulling torchvision.
$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install torch==2.13.0
	$(PIP) install -c constraints.txt -e '.[dev,server,e2gan,diffusion]'
	@$(PY) -c "import torch, sys; sys.exit(0 if torch.__version__.startswith('2.13.0') and not torch.version.cuda else 'torch is not the 2.13.0 CPU build')"
	touch $(STAMP)

test: install
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -q -n 2 --durations=10

demo: install
	$(VENV)/bin/edgegan demo --out runs/demo

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check src tests bench

bench: install
	$(PY) bench/latency.py

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache
