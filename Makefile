# Two commands do all the set-up on a fresh machine with Python 3.11:
#   make demo   creates .venv, installs, trains rvs-nerfacto on the built-in synthetic scene, prints ns-eval metrics
#   make test   creates .venv, installs, runs the whole test suite (what CI runs)
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install system-tools demo test
install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt torch==2.14.1 torchvision==0.29.1
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[test]'
	touch $@

demo: install
	$(BIN)/rvs-demo

# System tools that tests drive: Debian's Chromium (the viewer's browser test, through Selenium) and ffmpeg (which
# ns-render interpolate requires). Installed here where we are root on Debian, as in CI; elsewhere those tests skip
# and say how to install them.
SYSTEM_TOOLS := chromium chromedriver ffmpeg
system-tools:
	@for tool in $(SYSTEM_TOOLS); do command -v $$tool >/dev/null || missing=1; done; [ -z "$$missing" ] || \
	{ [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver ffmpeg >/dev/null; } || \
	echo "Chromium or ffmpeg could not be installed: the tests that need them will be skipped"

test: install system-tools
	$(BIN)/python -m pytest tests
