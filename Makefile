# tilewarp: `make demo` and `make test` set everything up on a fresh machine.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
# The CPU build of torch (pip finds it on disk here); override for a CUDA build.
TORCH  ?= torch==2.13.0
EXTRAS ?= test,nvrtc,demo,bench
export OMP_NUM_THREADS ?= 1

.PHONY: setup test test-fast demo bench profile gpu-test clean headers

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -e ".[$(EXTRAS)]"
	@touch $@

test: setup
	$(PY) -m pytest -q

test-fast: setup
	$(PY) -m pytest -q -m "not slow"

# The trained stdlib pair (models/stdlib-256/{target,drafter}) if present, else the tiny
# random model with a random drafter; both stream with DFlash on the CPU (tools/demo.py).
demo: setup
	$(PY) tools/demo.py

# Needs a CUDA GPU; `tilewarp bench --preset all --dry-run` shows the plan anywhere.
bench: setup
	$(VENV)/bin/tilewarp bench --preset mimo-mini

# On a machine with a Hopper GPU: Nsight Compute on one megakernel launch (source view)
# and the GPU test suite.
profile:
	tools/profile.sh

gpu-test:
	tools/gpu_run.sh

headers: setup
	$(PY) tools/gen_headers.py

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
