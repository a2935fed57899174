"""Which patches apply to the vLLM in this process: each one names the vLLM versions it was
verified on, and is applied only inside them. Outside, or where the code it replaces is not
there, it is left out with a warning, so a vLLM upgrade never runs a patch nobody has read
against that version."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from packaging.specifiers import SpecifierSet
from packaging.version import InvalidVersion, Version


@dataclass(frozen=True)
class Patch:
    """One fix of a known vLLM bug, applied in place."""

    name: str
    bug: str  # the upstream report (and fix, where there is one), for whoever removes the patch
    verified: SpecifierSet  # vLLM versions this patch was checked against
    applies: Callable[[], bool]  # the code it replaces is there, as it was when verified
    apply: Callable[[], None]


@dataclass(frozen=True)
class Outcome:
    patch: Patch
    applied: bool
    reason: str  # why not, when not


def release(version: str) -> Version | None:
    """The release a vLLM version string names, without local or dev parts: a build such as
    ``0.32.1+cu130`` or ``0.32.1.dev3+g1234`` counts as ``0.32.1``."""
    try:
        return Version(Version(version).base_version)
    except InvalidVersion:
        return None


def apply_patches(patches: Iterable[Patch], vllm_version: str) -> list[Outcome]:
    """Applies every patch whose range holds ``vllm_version`` and whose target is as it was;
    returns what happened to each."""
    version = release(vllm_version)
    outcomes = []
    for patch in patches:
        if version is None:
            outcomes.append(Outcome(patch, False, f"vLLM version {vllm_version!r} is unreadable"))
        elif version not in patch.verified:
            why = (
                f"vLLM {vllm_version} is outside the versions it was verified on ({patch.verified})"
            )
            outcomes.append(Outcome(patch, False, why))
        else:
            outcomes.append(_try(patch))
    return outcomes


def _try(patch: Patch) -> Outcome:
    """A patch whose target is gone or moved is left out, never an error: vLLM calls plugins
    outside any handler, so an exception here would stop the engine from starting."""
    try:
        if not patch.applies():
            return Outcome(patch, False, "the code it replaces has changed")
    except Exception as error:  # e.g. the module it patches no longer exists
        return Outcome(patch, False, f"the code it replaces has changed ({error!r})")
    try:
        patch.apply()
    except Exception as error:
        return Outcome(patch, False, f"applying it failed ({error!r})")
    return Outcome(patch, True, "")


def report(outcomes: list[Outcome], vllm_version: str, log: logging.Logger) -> None:
    """One line for what was applied, a warning for each patch left out."""
    applied = [o.patch.name for o in outcomes if o.applied]
    if applied:
        log.info(
            "mistral-serve engine patches applied on vLLM %s: %s", vllm_version, ", ".join(applied)
        )
    for outcome in outcomes:
        if not outcome.applied:
            log.warning(
                "mistral-serve engine patch %s not applied: %s (%s)",
                outcome.patch.name,
                outcome.reason,
                outcome.patch.bug,
            )
