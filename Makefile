# `make test`: the README's test command. Installs the package with every extra the tests use (export runtimes,
# MPI, W&B), builds mpi4jax against the mpich wheel, checks the package (ruff's error rules, mypy), then runs the
# whole suite.
PYTHON ?= python
MPICC = $(shell $(PYTHON) -c 'import sys, os; print(os.path.join(os.path.dirname(sys.executable), "mpicc"))')

.PHONY: install test mpi4jax lint

install:
	$(PYTHON) -m pip install -e ".[dev,onnx,tf,mpi,wandb]"

# mpi4jax compiles against the MPI it finds: point it at the mpich wheel's mpicc. CUDA_PATH names a folder without
# CUDA on a machine without it (an empty folder), so only the CPU bridge is built (see docs/benchmarks.md, 'Tested with').
mpi4jax: install
	$(PYTHON) -c 'import mpi4jax' 2>/dev/null || \
	  MPI4JAX_BUILD_MPICC="$(MPICC)" CUDA_PATH=$${CUDA_PATH:-$$(test -d /usr/local/cuda && echo /usr/local/cuda || mktemp -d)} \
	  $(PYTHON) -m pip install "mpi4jax==0.9.1.post2"

lint: install
	$(PYTHON) -m ruff check --select F jaxrl_dist tests examples
	$(PYTHON) -m mypy

test: mpi4jax lint
	JAXRL_REQUIRE_MPI=1 $(PYTHON) -m pytest tests
