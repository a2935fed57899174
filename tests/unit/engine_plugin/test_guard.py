"""The version guard: a patch is applied only on the vLLM versions it was verified on, and only
where the code it replaces is still there; otherwise it is left out, with a warning."""

from __future__ import annotations

import logging

import pytest
from packaging.specifiers import SpecifierSet

from mistral_serve.engine_plugin.guard import Patch, apply_patches, release, report


def patch(verified: str = ">=0.32.0,<0.34", applies: bool = True) -> tuple[Patch, list[str]]:
    calls: list[str] = []
    made = Patch(
        name="example",
        bug="vLLM #1",
        verified=SpecifierSet(verified),
        applies=lambda: applies,
        apply=lambda: calls.append("applied"),
    )
    return made, calls


@pytest.mark.parametrize(
    "version", ["0.32.0", "0.32.1", "0.33.0", "0.32.1+cu130", "0.33.0.dev7+g1a2b"]
)
def test_a_patch_is_applied_inside_its_range(version):
    made, calls = patch()
    [outcome] = apply_patches([made], version)
    assert outcome.applied and calls == ["applied"]


@pytest.mark.parametrize("version", ["0.31.2", "0.34.0", "1.0.0", "0.34.0rc1"])
def test_a_patch_is_left_out_outside_its_range(version):
    made, calls = patch()
    [outcome] = apply_patches([made], version)
    assert not outcome.applied and calls == []
    assert "outside the versions it was verified on" in outcome.reason


def test_a_patch_whose_target_changed_is_left_out():
    made, calls = patch(applies=False)
    [outcome] = apply_patches([made], "0.32.0")
    assert not outcome.applied and calls == []
    assert outcome.reason == "the code it replaces has changed"


def test_a_target_that_cannot_even_be_looked_at_is_left_out_not_raised():
    def gone() -> bool:
        raise ModuleNotFoundError("No module named 'vllm.parser.mistral'")

    made = Patch("example", "vLLM #1", SpecifierSet(">=0.32"), applies=gone, apply=lambda: None)
    [outcome] = apply_patches([made], "0.32.0")
    assert not outcome.applied and "changed" in outcome.reason


def test_a_patch_that_fails_while_applied_is_reported_not_raised():
    def broken() -> None:
        raise AttributeError("no such attribute")

    made = Patch("example", "vLLM #1", SpecifierSet(">=0.32"), applies=lambda: True, apply=broken)
    [outcome] = apply_patches([made], "0.32.0")
    assert not outcome.applied and "applying it failed" in outcome.reason


def test_an_unreadable_version_patches_nothing():
    made, calls = patch()
    [outcome] = apply_patches([made], "unknown")
    assert not outcome.applied and calls == []


def test_release_drops_local_and_dev_parts():
    assert str(release("0.32.1+cu130")) == "0.32.1"
    assert str(release("0.33.0.dev7+g1a2b")) == "0.33.0"
    assert release("not a version") is None


def test_the_report_is_one_line_for_what_applied_and_a_warning_for_each_left_out(caplog):
    applied, _ = patch()
    left_out, _ = patch(verified=">=0.40")
    outcomes = apply_patches([applied, left_out], "0.32.0")
    with caplog.at_level(logging.INFO, logger="test"):
        report(outcomes, "0.32.0", logging.getLogger("test"))
    [info, warning] = caplog.records
    assert info.levelno == logging.INFO and "applied on vLLM 0.32.0: example" in info.getMessage()
    assert warning.levelno == logging.WARNING and "not applied" in warning.getMessage()
    assert "vLLM #1" in warning.getMessage()
