# Two entry points for a fresh machine: `make demo` and `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp

.PHONY: demo test bench clean

# torch goes first and alone so that pip takes the pinned CPU wheel rather than resolving a CUDA build.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/wmhkit evaluate examples/evaluate/sub-patient26_wmh.nii.gz \
		examples/evaluate/sub-patient26_desc-threshold_mask.nii.gz

test: $(STAMP)
	$(PY) -m pytest -q

bench: $(STAMP)
	$(PY) bench/evaluate_speed.py
	$(PY) bench/synth_speed.py
	OMP_NUM_THREADS=1 $(PY) bench/augment_speed.py
	$(PY) bench/preprocess_speed.py

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache
