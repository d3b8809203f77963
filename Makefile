# The README's two set-up commands. Each creates/updates .venv and installs what it needs.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# One BLAS thread: reproducible last digits, and faster on small shared machines (see tests/conftest.py).
export OPENBLAS_NUM_THREADS ?= 1
export OMP_NUM_THREADS ?= 1
export MKL_NUM_THREADS ?= 1

.PHONY: demo test lab clean-output bytecode

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e ".[test,spark]"
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $(STAMP)

# The events demo client is generated (only data/demo/ is committed): the command params/demo-events.yaml names.
DEMO_EVENTS := data/demo-events/events.parquet
$(DEMO_EVENTS): $(STAMP)
	$(BIN)/python -m cskit.simulate --accounts 300 --months 24 --seed 11 --start 2024-07 --events --out data/demo-events

# cskit's bytecode written once (an environment with PYTHONDONTWRITEBYTECODE, as some images set, would
# otherwise compile every module in every process: ~0.2 s of each run's start and of its kernel's)
bytecode: $(STAMP)
	$(BIN)/python -m compileall -q cskit

demo: $(STAMP) $(DEMO_EVENTS) bytecode
	$(BIN)/cskit run params/demo.yaml

test: $(STAMP) $(DEMO_EVENTS) bytecode
	$(BIN)/ruff check .
	$(BIN)/nbstripout --verify notebooks/*.ipynb
	$(BIN)/python -m pytest -q -p no:cacheprovider
	# the notebook as a data scientist runs it (kernel in notebooks/, the demo, results in output/demo/)
	$(BIN)/python -m pytest -q -p no:cacheprovider --nbval-lax --nbval-current-env notebooks/diagnosis.ipynb

# JupyterLab on the diagnosis notebook, ready to run top to bottom on the demo (results in output/demo/)
lab: $(STAMP)
	$(BIN)/jupyter lab notebooks/diagnosis.ipynb

clean-output:
	rm -rf output
