# Two commands do everything on a fresh machine (see README):
#   make demo   create .venv, build a tiny foreign checkpoint, load it through the engine, print the load report
#   make test   create .venv, run the whole test suite
#
# torch is pinned to the CPU build pip finds for 2.13.0, so a CPU box never pulls multi-GB CUDA wheels.
# A GPU user overrides it, e.g.:  make test TORCH="torch==2.13.0 --index-url <your CUDA wheel index>"

PYTHON ?= python3
VENV   ?= .venv
TORCH  ?= torch==2.13.0
SAT    ?= SwissArmyTransformer==0.4.12
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip --disable-pip-version-check

.PHONY: demo test clean

$(VENV)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q $(TORCH)
	$(PIP) install -q -e ".[test,sat,fla]"
	$(PIP) install -q --no-deps $(SAT)
	touch $@

demo: $(VENV)/.installed
	$(PY) -m adapters.demo

test: $(VENV)/.installed
	$(PY) -m pytest -q

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info .pytest_cache
