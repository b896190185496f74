# Two commands do all the set-up on a fresh machine with Python 3.11:
#   make demo   creates .venv, installs, trains rvs-nerfacto on the built-in synthetic scene, prints ns-eval metrics
#   make test   creates .venv, installs, runs the whole test suite (what CI runs)
#   make mutants  mutation testing of the sampling core, samplers and models with mutmut; prints the survivors
#                 (slow: about 1 hour on one core; not run in CI; see mutation/README.md)
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install system-tools demo test mutants
install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt torch==2.14.1 torchvision==0.29.1
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[test]'
	touch $@

demo: install
	$(BIN)/rvs-demo

# System tools that tests drive: Debian's Chromium (the viewer's browser test, through Selenium), ffmpeg (which
# ns-render interpolate requires) and libusb (open3d, which ns-export imports, links against it). Installed here where
# we are root on Debian, as in CI; elsewhere the browser and video tests skip and say how to install them.
SYSTEM_TOOLS := chromium chromedriver ffmpeg
system-tools:
	@for tool in $(SYSTEM_TOOLS); do command -v $$tool >/dev/null || missing=1; done; \
	ldconfig -p | grep -q 'libusb-1.0.so.0' || missing=1; [ -z "$$missing" ] || \
	{ [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver ffmpeg libusb-1.0-0 >/dev/null; } || \
	echo "Chromium, ffmpeg or libusb could not be installed: the tests that need them will be skipped or fail"

test: install system-tools
	$(BIN)/python -m pytest tests

# Mutation testing (issue 14); configured in [tool.mutmut] in pyproject.toml, explained in mutation/README.md.
# MUTANTS_JOBS: worker processes (default 1). MUTANTS: mutant names or globs to (re)run, e.g.
# MUTANTS='rvs_nerfstudio.core.spline.*'; empty runs every mutant without a result yet. State lives in mutants/.
MUTMUT_VERSION := 3.8.1
MUTANTS_JOBS ?= 1
MUTANTS ?=
mutants: install
	@$(BIN)/python -m pip show mutmut 2>/dev/null | grep -qx 'Version: $(MUTMUT_VERSION)' || \
	  $(BIN)/python -m pip install -q 'mutmut==$(MUTMUT_VERSION)'
	OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 $(BIN)/mutmut run --max-children $(MUTANTS_JOBS) $(MUTANTS)
	@echo; echo "== mutmut results (every mutant not killed) =="; $(BIN)/mutmut results
	@echo; echo "== surviving mutants =="
	@$(BIN)/mutmut results | sed -n 's/^ *\([^ ]*\): survived$$/\1/p' | while read -r name; do $(BIN)/mutmut show "$$name"; echo; done
	@echo "== summary (also in mutants/survivors.txt) =="; $(BIN)/python mutation/report.py --output mutants/survivors.txt
