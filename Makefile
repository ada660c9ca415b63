# Two commands for a fresh machine: `make demo` and `make test`. Both create .venv and install first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEMO := datasets/demo

.PHONY: install demo test clean-demo

$(STAMP): requirements.txt requirements-dev.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --disable-pip-version-check -q -r requirements-dev.txt
	touch $(STAMP)

install: $(STAMP)

$(DEMO)/valid/captions.csv: scripts/make_demo_dataset.py | $(STAMP)
	$(PY) scripts/make_demo_dataset.py --out $(DEMO) --overwrite

pretrains/demo-roberta/config.json: $(DEMO)/valid/captions.csv scripts/make_demo_text_tower.py
	$(PY) scripts/make_demo_text_tower.py --captions $(DEMO)/train/captions.csv --out pretrains/demo-roberta

demo: $(STAMP) pretrains/demo-roberta/config.json
	$(PY) init.py --config configs/demo/init.yaml --overwrite true
	$(PY) train.py --config configs/demo/train.yaml --overwrite true
	$(PY) eval.py --config configs/demo/eval.yaml

test: $(STAMP)
	$(PY) -m pytest -q tests

clean-demo:
	rm -rf $(DEMO) pretrains/demo-roberta checkpoints/demo
