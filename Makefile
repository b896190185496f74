# Two commands do all the set-up on a fresh machine with Python 3.11:
#   make demo   creates .venv, installs, trains rvs-nerfacto on the built-in synthetic scene, prints ns-eval metrics
#   make test   creates .venv, installs, runs the whole test suite (what CI runs)
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test
install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt torch==2.14.1 torchvision==0.29.1
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[test]'
	touch $@

demo: install
	$(BIN)/rvs-demo

test: install
	$(BIN)/python -m pytest tests
