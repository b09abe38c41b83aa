# Two commands do everything on a fresh machine (see README):
#   make demo   create .venv from the lock; HF LLaMA -> SAT and BlinkDL RWKV-7 -> FLA, each against its reference
#   make test   create .venv from the lock, run the whole test suite
# and, for maintainers:
#   make test-min     the suite on the floors pyproject.toml declares (requirements/min.txt)
#   make test-latest  the canary: the newest versions pyproject.toml allows, resolved today, in .venv-latest
#   make lock         re-resolve requirements/*.txt (pip-tools; needs the package registry)
#
# Every venv holds exactly a lock: pip itself, torch, the hashed lock (installed with --no-deps, so nothing is
# resolved at install time), SAT (--no-deps: it declares deepspeed, which it does not need for models) and this
# package. torch is the CPU build pip finds for 2.13.0, so a CPU box never pulls multi-GB CUDA wheels; a GPU user
# overrides it, e.g.:  make test TORCH="torch==2.13.0 --index-url <your CUDA wheel index>"

PYTHON ?= python3
VENV   ?= .venv
TORCH  ?= torch==2.13.0
REQ    := requirements
COMPILE = .venv-lock/bin/pip-compile -q --generate-hashes --strip-extras --unsafe-package torch \
          --no-emit-index-url --no-emit-find-links -c $(REQ)/constraints.txt

.PHONY: demo test test-min test-latest lock clean

# $(call stack,VENV,LOCK): a fresh venv holding exactly LOCK
define stack
	rm -rf $(1)
	$(PYTHON) -m venv $(1)
	$(1)/bin/python -m pip install -q --require-hashes -r $(REQ)/pip.txt
	$(1)/bin/python -m pip install -q $(TORCH)
	$(1)/bin/python -m pip install -q --no-deps --require-hashes -r $(2) -r $(REQ)/sat.txt
	$(1)/bin/python -m pip install -q --no-deps --no-build-isolation -e .
	touch $(1)/.installed
endef

$(VENV)/.installed: $(REQ)/lock.txt $(REQ)/sat.txt $(REQ)/pip.txt pyproject.toml Makefile
	$(call stack,$(VENV),$(REQ)/lock.txt)

.venv-min/.installed: $(REQ)/min.txt $(REQ)/sat.txt $(REQ)/pip.txt pyproject.toml Makefile
	$(call stack,.venv-min,$(REQ)/min.txt)

demo: $(VENV)/.installed
	$(VENV)/bin/python -m adapters.demo

test: $(VENV)/.installed
	$(VENV)/bin/python -m pytest -q

test-min: .venv-min/.installed
	.venv-min/bin/python -m pytest -q

# The canary: what a user who runs `pip install ckpt-adapters[sat,fla]` today gets, except torch, held at the CPU
# build by requirements/constraints.txt (the newer torch on the registry is a multi-GB CUDA build, which an eager
# upgrade would otherwise pull in). Prints what moved past the lock, then runs the suite.
test-latest:
	rm -rf .venv-latest
	$(PYTHON) -m venv .venv-latest
	.venv-latest/bin/python -m pip install -q --upgrade pip
	.venv-latest/bin/python -m pip install -q $(TORCH)
	.venv-latest/bin/python -m pip install -q --upgrade --upgrade-strategy eager -c $(REQ)/constraints.txt -e ".[test,sat,fla]"
	.venv-latest/bin/python -m pip install -q --upgrade --no-deps SwissArmyTransformer
	.venv-latest/bin/python $(REQ)/drift.py $(REQ)/lock.txt $(REQ)/sat.txt
	.venv-latest/bin/python -m pytest -q

lock:
	$(PYTHON) -m venv .venv-lock
	.venv-lock/bin/python -m pip install -q pip-tools==7.6.2
	$(COMPILE) --extra test --extra sat --extra fla -o $(REQ)/lock.txt pyproject.toml
	$(COMPILE) -o $(REQ)/min.txt $(REQ)/min.in
	$(PYTHON) $(REQ)/pin_no_deps.py SwissArmyTransformer==0.4.12 > $(REQ)/sat.txt
	$(PYTHON) $(REQ)/pin_no_deps.py pip==26.3 > $(REQ)/pip.txt

clean:
	rm -rf $(VENV) .venv-min .venv-latest .venv-lock build *.egg-info src/*.egg-info .pytest_cache
