# Set-up and the two entry points of the README. Everything installs into .venv, so a fresh
# machine needs only python3 and make. torch is installed first and pinned to the CPU build
# the machine carries; the project's own `torch>=...` range is then already satisfied and pip
# never reaches for a multi-GB CUDA wheel.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
TORCH  ?= torch==2.13.0
# The GPU machine runs Triton 3.6; the interpreter here runs the same release so that a
# kernel that passes here was checked by the same front end.
TRITON ?= triton==3.6.0
JOBS   ?= 2

.PHONY: demo test setup clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q "$(TORCH)" "$(TRITON)"
	$(PY) -m pip install -q -e ".[dev,tilelang]"
	touch $@

setup: $(VENV)/.installed

# The main job: regenerate every package and check it against what is committed, run each
# generated kernel against the spec-derived reference, and print a small comparison.
demo: $(VENV)/.installed
	$(VENV)/bin/gka-gen demo

# The test suite (CPU: Triton kernels run in the Triton interpreter).
test: $(VENV)/.installed
	TRITON_INTERPRET=1 $(PY) -m pytest -n $(JOBS) -q tests

clean:
	rm -rf $(VENV)
