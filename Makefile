# mmfuse — one-command set-up on a fresh machine (Python >= 3.10 and a package index/mirror).
#
#   make demo   create .venv, install mmfuse (builds the C++/CUDA extension), train radm-tiny
#               on the embedded synthetic data set and print its dev accuracy / F1 next to the
#               text-only and image-only Bayes ceilings (examples/synthetic_demo.py), then print
#               the eval / predict commands for the trained run (with .venv's python)
#   make test   create .venv, install mmfuse with test extras, run the whole test suite
#
# Variables: PYTHON (interpreter used to create the venv), VENV (its folder), MAX_JOBS
# (parallel compile jobs), MMFUSE_BUILD_CUDA (0/1; default: auto), PYTEST_ARGS.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check
MAX_JOBS ?= 2
PYTEST_ARGS ?=
TORCH_REQ ?= torch>=2.4,<2.15
TORCHVISION_REQ ?= torchvision>=0.19
DEMO_ARGS ?=

EXT_SOURCES := $(shell find csrc -type f 2>/dev/null)
STAMP := $(VENV)/.mmfuse-installed

.PHONY: install demo test clean

$(PY):
	$(PYTHON) -m venv $(VENV)

# torch first: the extension is compiled against the installed torch (no build isolation).
$(STAMP): $(PY) pyproject.toml setup.py $(EXT_SOURCES)
	$(PIP) install -q "$(TORCH_REQ)" "$(TORCHVISION_REQ)" "setuptools>=77" wheel ninja
	MAX_JOBS=$(MAX_JOBS) $(PIP) install -q --no-build-isolation -e ".[test]"
	$(PY) -c "import mmfuse.ops as o; assert o.extension_available(), 'mmfuse._C failed to load'; print('mmfuse._C loaded; CUDA kernels:', o.built_with_cuda())"
	touch $(STAMP)

install: $(STAMP)

# ~3 min on 2 CPU cores; DEMO_ARGS="--num-epochs 1" for a quicker look, "--output-dir DIR" to keep it elsewhere
demo: $(STAMP)
	$(PY) examples/synthetic_demo.py $(DEMO_ARGS)

test: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

clean:
	rm -rf build *.egg-info mmfuse/_C*.so
