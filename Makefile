# medpipe: the two commands a new user needs are `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
CORES ?= all
export PYTHONHASHSEED := 0

.PHONY: venv demo demo-data sts test lint lock clean

$(STAMP): requirements.lock pyproject.toml
	$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else "medpipe needs Python 3.11")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -r requirements.lock
	$(BIN)/pip install -q --no-deps --no-build-isolation -e .
	touch $(STAMP)

venv: $(STAMP)

demo-data: venv
	$(BIN)/medpipe demo-data --out resources/demo --config config/config.yaml

# The demo study: config/config.yaml with the lesion as two classes, rim and core (config/demo.yaml).
DEMO_SMK = source $(BIN)/activate && snakemake --profile profiles/default --configfile config/demo.yaml

demo: demo-data
	$(DEMO_SMK) --cores $(CORES)
	$(DEMO_SMK) --cores 1 --report results/report.html
	@echo "medpipe demo finished. Report: $(CURDIR)/results/report.html"

# Real data (developers and CI machines only): the 38 IBSI soft-tissue-sarcoma patients from ../shared,
# read as NIfTI, 5-fold CV, radiomics of human / automatic / perturbed masks. Report: $(STS_DIR)/results/report.html
SHARED ?= $(abspath ../shared)
STS_DIR ?= runs/ibsi_sts
STS_SMK = source $(BIN)/activate && snakemake -s $(CURDIR)/Snakefile --directory $(STS_DIR) \
	--configfile $(CURDIR)/config/ibsi_sts.yaml --workflow-profile $(CURDIR)/profiles/default

sts: venv
	$(BIN)/medpipe sheet $(SHARED)/data/ibsi_sts/nifti --label MR_T1_mask.nii.gz --require MR_T1_image.nii.gz \
	  --out $(STS_DIR)/subjects.tsv
	$(STS_SMK) --cores $(CORES)
	$(STS_SMK) --cores 1 --report results/report.html  # relative to --directory
	@echo "medpipe STS run finished. Report: $(CURDIR)/$(STS_DIR)/results/report.html"

test: venv
	@command -v chromium >/dev/null || (apt-get update -qq && apt-get install -y -qq chromium >/dev/null) \
	  || echo "chromium could not be installed: the report rendering test will be skipped"
	source $(BIN)/activate && pytest tests

lint: venv
	source $(BIN)/activate && ruff check src scripts tests benchmarks && ruff format --check src scripts tests benchmarks \
	  && snakefmt --check Snakefile rules && mypy && lint-imports && snakemake --lint

lock:
	rm -rf .lockvenv && $(PYTHON) -m venv .lockvenv && .lockvenv/bin/pip install -q -r requirements.in
	{ echo "# Generated from requirements.in by 'make lock' (pip freeze of a fresh venv). Python 3.11."; \
	  .lockvenv/bin/pip freeze | sed 's/+cpu//'; } > requirements.lock && rm -rf .lockvenv

clean:
	rm -rf results logs .snakemake resources/demo
