# Two commands do all the set-up on a fresh machine with Python 3.11:
#   make demo   creates .venv, installs, trains rvs-nerfacto on the built-in synthetic scene, prints ns-eval metrics
#   make test   creates .venv, installs, runs the whole test suite (what CI runs)
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install browser demo test
install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt torch==2.14.1 torchvision==0.29.1
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[test]'
	touch $@

demo: install
	$(BIN)/rvs-demo

# The viewer's browser test drives Debian's Chromium through Selenium; installed here where we are root on Debian
# (as in CI). Elsewhere the test skips and says how to install it.
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
	{ [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; } || \
	echo "Chromium could not be installed: the viewer's browser test will be skipped"

test: install browser
	$(BIN)/python -m pytest tests
