# charlm: `make train` trains the default preset, `make test` runs the tests.
# Both create .venv and install the CPU build of torch first (a plain `pip install torch`
# would pull a multi-GB CUDA build), then charlm itself in editable mode.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH_VERSION ?= 2.13.0
STAMP := $(VENV)/.installed
# pytest-xdist processes for make test; each test module stays in one, with its fixtures.
TEST_WORKERS ?= 2

.PHONY: install train test test-fast test-gpu bench bench-quick bench-serve bench-export versus versus-long auto-measure presets figures screenshots docs reference interleave clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install --quiet --disable-pip-version-check torch==$(TORCH_VERSION)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $(STAMP)

train: $(STAMP)
	$(BIN)/charlm train -c configs/default.yaml

# Every test (about 3 minutes on 2 cores); test-fast leaves out the slow end-to-end ones (under a minute).
test: $(STAMP)
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadscope

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadscope -m "not slow and not gpu"

# The CUDA paths only (tests/test_gpu.py), on a machine with a GPU: install a CUDA build of torch
# first (TORCH_VERSION stays the same; pip picks the build from the index you give it).
test-gpu: $(STAMP)
	$(BIN)/python -m pytest -q -m gpu -rs

# Every figure of docs/performance.md in one run (about 45 minutes): training tok/s vs the bare
# kernel, the 60 s preset, sampling, start-up, memory on a 1 GB text (bench/run.py), then charlm
# against a plain script side by side (bench/versus.py); writes bench/results/*.json (then make docs).
bench: $(STAMP)
	$(BIN)/python bench/run.py
	$(MAKE) versus

# charlm (model.size auto) against bench/baseline.py on the same machine, text, split and budget:
# 60 s on three texts at 2 and 1 threads and on two small ones (the first 300k characters of
# tinyshakespeare, 400k of Python source) at 2, 10 minutes on tinyshakespeare, each also with the cell
# fixed to the LSTM, and the loop's own cost (about 40 minutes).
versus: $(STAMP)
	$(BIN)/python bench/versus.py --also tinyshakespeare:300k:60s:2 --also python:400k:60s:2 \
		--also tinyshakespeare:10m:2 --arm "lstm=--cell lstm"

# The long budgets (about 5 hours): 10 minutes and an hour on tinyshakespeare and the complete works,
# against the plain script as it comes (2x512, dropout 0.2) and with dropout 0.3.
versus-long: $(STAMP)
	$(BIN)/python bench/versus.py --texts tinyshakespeare,shakespeare --budgets 10m,1h --threads 2 \
		--loop-rounds 0 --script-arm "dropout=--dropout 0.3"

# The sweeps model.size auto's rule was fitted to (configs/sweeps/auto/, hours), then docs/auto.md.
auto-measure: $(STAMP)
	$(BIN)/python bench/auto_measure.py

# The same parts, smaller (about 2 minutes): a check that the benchmark works, not figures to quote.
bench-quick: $(STAMP)
	$(BIN)/python bench/run.py --quick

# charlm serve under 1, 8, 64 and 256 streaming clients against the offline batched sampler
# (about 3 minutes); writes bench/results/serve-DATE.json (then make docs).
bench-serve: $(STAMP)
	$(BIN)/python bench/serve.py

# The exported files' sizes, and the page's and onnxruntime's speed beside charlm sample's (about a minute).
bench-export: $(STAMP)
	$(BIN)/python bench/export.py

# Val loss and throughput of the tinyshakespeare presets (about 12 minutes).
presets: $(STAMP)
	$(BIN)/python bench/presets.py configs/tinyshakespeare-60s.yaml configs/tinyshakespeare-10m.yaml

# docs/inspect.md's figures (about 10 minutes): gradient curves of fresh and of 60-second-trained
# models of each cell on tinyshakespeare, and the memory task; writes docs/ and the page's tables.
figures: $(STAMP)
	rm -rf runs/figures
	for cell in rnn_tanh gru lstm mingru minlstm; do \
	  $(BIN)/charlm train -c configs/figures.yaml --cell $$cell --no-sample -o runs/figures/$$cell || exit 1; \
	done
	$(BIN)/charlm inspect gradients configs/figures.yaml --cells rnn_tanh,gru,lstm,mingru,minlstm \
	  runs/figures/rnn_tanh runs/figures/gru runs/figures/lstm runs/figures/mingru runs/figures/minlstm -o docs
	$(BIN)/charlm inspect memory -o docs
	$(BIN)/python bench/machine.py > docs/figures-machine.txt
	$(BIN)/python bench/write_docs.py

# The playground's picture in the README (docs/images/playground.png): trains the 60 s preset into
# runs/screenshot first if it is not there, then drives the page in Debian's Chromium.
screenshots: $(STAMP)
	$(BIN)/python bench/screenshots.py

# docs/performance.md and docs/inspect.md's tables, from what the benchmarks and make figures wrote.
docs: $(STAMP)
	$(BIN)/python bench/write_docs.py

# A refactoring's check: the reference trainings of another checkout (BEFORE=DIR, e.g. a git worktree
# of main) and of this one, interleaved, compared bit for bit; then their training speed, in turns.
reference: $(STAMP)
	$(BIN)/python bench/reference.py --before $(BEFORE)

interleave: $(STAMP)
	$(BIN)/python bench/interleave.py --before $(BEFORE) --json bench/results/interleave-$$(date +%Y%m%d).json

clean:
	rm -rf $(VENV) .pytest_cache *.egg-info
