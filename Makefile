# The two commands of the README, plus helpers. Everything installs into .venv from PyPI, with
# every version pinned in envs/constraints.txt (torch 2.13.0: the CPU wheel here, CUDA elsewhere).
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
# as many jobs as the machine has cores (a laptop is not oversubscribed); make run CORES=8 to override
CORES ?= $(shell nproc 2>/dev/null || sysctl -n hw.ncpu 2>/dev/null || echo 2)

.PHONY: run test test-science bench lint setup clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml envs/constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c envs/constraints.txt -e '.[test]'
	touch $@

## run: the whole workflow on the bundled demo (synthetic IBL sessions)
run: setup
	$(BIN)/snakemake --cores $(CORES) results/figures/all.done

## test: unit tests and the tiny end-to-end workflow. Test files run side by side (pytest-xdist,
## a file per worker, one worker more than cores, at most 4): the SLURM scenario mostly waits on
## the scheduler's polling, and the other files use that time: it is collected first
## (tests/conftest.py) and kept first.
TEST_WORKERS := $(shell n=$$(( $(CORES) + 1 )); [ $$n -gt 4 ] && n=4; echo $$n)
test: setup
	$(BIN)/python -m pytest -q --numprocesses $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder

## test-science: the claims, held on small models trained long enough to make them (minutes; CI runs it)
test-science: setup
	$(BIN)/python -m pytest -q -m science

bench: setup
	$(BIN)/python bench/bench_binning.py
	$(BIN)/python bench/bench_load.py
	$(BIN)/python bench/bench_train.py
	$(BIN)/python bench/bench_stack.py --processes 2
	$(BIN)/python bench/bench_cosmooth.py
	$(BIN)/python bench/bench_pretrain.py
	$(BIN)/python bench/bench_pretrain_scale.py
	$(BIN)/python bench/bench_ndt2.py
	$(BIN)/python bench/bench_heads.py
	$(BIN)/python bench/bench_demo.py

lint: setup
	$(BIN)/snakefmt --check Snakefile workflow/rules
	$(BIN)/snakemake --lint

clean:
	rm -rf results .snakemake
