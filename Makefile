# Two commands a new user needs: `make run` (the app on its built-in demo) and `make test`.
# Each creates .venv when missing, upgrades pip in it, installs requirements.txt, then runs.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.requirements-installed

.PHONY: run test test-fast venv clean-cache

$(STAMP): requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	touch $(STAMP)

venv: $(STAMP)

run: $(STAMP)
	$(PY) -m streamlit run app.py

test: $(STAMP)
	$(PY) -m pytest -q

test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow"

clean-cache:
	rm -rf $${IDRID_STUDIO_CACHE:-$${XDG_CACHE_HOME:-$$HOME/.cache}/idrid-studio}
