# Two commands a new user needs: `make run` (the app on its built-in demo) and `make test`.
# Each creates .venv when missing, upgrades pip in it, installs requirements.txt, then runs.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.requirements-installed

.PHONY: run test test-fast venv clean-cache planted mutation

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

# The test net's own checks (not part of `make test` or CI: minutes to an hour). `planted` plants each bug a review
# found the suite blind to, one at a time in a scratch copy, and fails if one survives; `mutation` runs mutmut over
# the modules where a silent bug costs most ([tool.mutmut] in pyproject.toml) and prints the surviving mutants.
planted: $(STAMP)
	$(PY) scripts/planted_bugs.py

MUTMUT := $(VENV)/bin/mutmut
$(MUTMUT): $(STAMP)
	$(PY) -m pip install --quiet mutmut==3.8.1

mutation: $(MUTMUT)
	OMP_NUM_THREADS=1 $(MUTMUT) run --max-children $$(nproc)  # one OpenMP thread: torch forks safely
	$(MUTMUT) export-cicd-stats
	$(PY) scripts/mutation_score.py

clean-cache:
	rm -rf $${IDRID_STUDIO_CACHE:-$${XDG_CACHE_HOME:-$$HOME/.cache}/idrid-studio}
