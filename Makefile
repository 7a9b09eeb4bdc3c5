# Two commands for a fresh machine:  make demo   and   make test
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
TORCH  := torch==2.13.0
export HF_HUB_OFFLINE := 1
export HF_HUB_DISABLE_TELEMETRY := 1
export GRADIO_ANALYTICS_ENABLED := False
export TRANSFORMERS_NO_ADVISORY_WARNINGS := 1

.PHONY: setup demo test tiny bench bench-batch clean app synth synth-eval ship-default

$(VENV)/.installed: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(TORCH)
	echo "$(TORCH)" > $(VENV)/constraints.txt
	$(PY) -m pip install --quiet -c $(VENV)/constraints.txt -r requirements.txt
	touch $@

setup: $(VENV)/.installed

# The trained tiny default when one is shipped in assets/tiny_trained (`make ship-default`),
# else random weights built here. A newer shipped default replaces an older build.
ckpts/tiny/bundle.json: $(VENV)/.installed $(wildcard assets/tiny_trained/bundle.json)
	$(PY) -m llama.tiny ckpts/tiny --trained --force

tiny: ckpts/tiny/bundle.json

# With the shipped trained default: answers held-out requests of the synthetic world (music
# questions, a description, music for a picture, a video and a caption), prints each answer
# beside the truth, writes WAVs to outputs/demo/. Without it: random weights on example media.
demo: tiny
	rm -f outputs/demo/results.jsonl
	@if [ -f assets/demo/requests.jsonl ] && [ -f assets/tiny_trained/bundle.json ]; then \
	  $(PY) inference.py --input assets/demo/requests.jsonl --output-dir outputs/demo && \
	  echo && $(PY) -m DataSet.synth.demo check outputs/demo/results.jsonl assets/demo/truth.json; \
	else \
	  $(PY) -m llama.examples assets/generated && \
	  $(PY) inference.py --input assets/generated/requests.jsonl --output-dir outputs/demo; \
	fi
	@echo "answers: outputs/demo/results.jsonl   music: outputs/demo/*.wav"

# The learning proof on the synthetic world: world -> stand-ins -> stages 1-3 -> held-out report
# (outputs/synth/report.json, report.png) and a trained bundle (outputs/synth/trained_bundle).
synth: setup
	$(PY) -m DataSet.synth.proof outputs/synth --size 400

# The evaluation metrics (evaluate.py) on the held-out world: the trained bundle of `make synth`
# against a random tiny bundle, side by side. FAD uses the world-pretrained MERT stand-in's
# embeddings; KL an instrument classifier trained on the world (DataSet.synth.standins_classifier);
# CLAP and BERTScore use tiny random models (llama.metrics.tiny_models).
EVAL_MODELS := --bert-dir outputs/eval_models/bert --embed-model outputs/synth/trained_bundle/MERT \
	--embed-kind audio --classifier outputs/synth/world_classifier --clap outputs/eval_models/clap --no-progress
EVAL_N := --n-qa 20 --n-music 40
synth-eval: setup
	$(PY) -m llama.metrics.tiny_models outputs/eval_models
	$(PY) -m DataSet.synth.standins_classifier outputs/synth/world_classifier --world outputs/synth/world
	$(PY) -m llama.tiny outputs/synth/random_bundle --force
	$(PY) evaluate.py synth-requests --world outputs/synth/world/heldout --out outputs/synth/eval_req $(EVAL_N)
	for m in trained random; do \
	  rm -f outputs/synth/eval_$$m/results.jsonl && \
	  $(PY) inference.py --ckpt-dir outputs/synth/$${m}_bundle --input outputs/synth/eval_req/requests.jsonl \
	    --output-dir outputs/synth/eval_$$m --batch-size 8 && \
	  $(PY) evaluate.py synth --world outputs/synth/world/heldout --results outputs/synth/eval_$$m $(EVAL_MODELS) $(EVAL_N) \
	    || exit 1; \
	done
	$(PY) evaluate.py compare trained=outputs/synth/eval_trained/eval_synth.json \
	  random=outputs/synth/eval_random/eval_synth.json | tee outputs/synth/eval_compare.txt

# Replace the shipped trained default and demo requests with those of the last `make synth`.
ship-default: synth
	rm -rf assets/tiny_trained assets/demo
	cp -r outputs/synth/trained_bundle assets/tiny_trained
	$(PY) -m DataSet.synth.demo outputs/synth/world/heldout assets/demo

# The browser chat demo on the tiny bundle; binds 127.0.0.1 (python gradio_app.py --help for more).
app: tiny
	$(PY) gradio_app.py

test: setup
	$(PY) -m pytest -q

bench: setup
	$(PY) benchmarks/decode.py

# batch inference and compiled decode (about 7 minutes on 2 cores); LAYOUT=onednn for the oneDNN copies
LAYOUT ?= columns
bench-batch: setup tiny
	OMP_NUM_THREADS=1 $(PY) benchmarks/batch_inference.py --layout $(LAYOUT) --json benchmarks/results/batch_inference_$(LAYOUT).json

clean:
	rm -rf outputs assets/generated ckpts/tiny
