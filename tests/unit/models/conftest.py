from __future__ import annotations

from pathlib import Path

import pytest

from mistral_serve.models import demo


@pytest.fixture(scope="session")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Both demo checkpoints, built once for the models tests."""
    root = tmp_path_factory.mktemp("demo")
    return {variant: demo.ensure_demo_model(root / variant, variant) for variant in demo.VARIANTS}
