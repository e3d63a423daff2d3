# Two entry points for a fresh machine: `make demo` and `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp

DEMO_FLAIR    := examples/segment/sub-patient20_ses-study2_FLAIR.nii.gz
MODEL_VERSION ?= 2026.12-cpu1

.PHONY: demo test bench clean train-default

# torch goes first and alone so that pip takes the pinned CPU wheel rather than resolving a CUDA build.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/wmhkit segment $(DEMO_FLAIR) -o demo_output --force

# The shipped WMH models (docs/model_card.md): the side-output FCN with and without T1, 35-40 minutes
# each on 2 CPU cores, then copied into the package with a name and version.
train-default: $(STAMP)
	$(VENV)/bin/wmhkit train --config configs/sidefcn_cpu.toml --out runs/default_flair_t1
	$(VENV)/bin/wmhkit train --config configs/sidefcn_cpu.toml --out runs/default_flair \
		--set 'data.inputs="colour_flair"'
	$(PY) scripts/ship_model.py runs/default_flair_t1/model.pt sidefcn-flair-t1 --version $(MODEL_VERSION)
	$(PY) scripts/ship_model.py runs/default_flair/model.pt sidefcn-flair --version $(MODEL_VERSION)
	$(VENV)/bin/wmhkit train --config configs/wm_sidefcn_flair.toml --out runs/default_wm_flair
	$(VENV)/bin/wmhkit train --config configs/wm_sidefcn_flair.toml --out runs/default_wm_flair2 \
		--init runs/default_wm_flair/model.pt --steps 1200 --lr 5e-4 --set run.validate_every=600
	$(PY) scripts/ship_model.py runs/default_wm_flair2/model.pt wm-sidefcn-flair --version $(MODEL_VERSION)

test: $(STAMP)
	$(PY) -m pytest -q

bench: $(STAMP)
	$(PY) bench/evaluate_speed.py
	$(PY) bench/synth_speed.py
	OMP_NUM_THREADS=1 $(PY) bench/augment_speed.py
	$(PY) bench/preprocess_speed.py
	$(PY) bench/segment_speed.py

clean:
	rm -rf $(VENV) demo_output build src/*.egg-info .pytest_cache
