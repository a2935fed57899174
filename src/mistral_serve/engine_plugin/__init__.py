"""Code that runs inside vLLM's own processes: fixes of known vLLM bugs, each guarded by the
vLLM versions it was verified on (``guard.py``), applied when vLLM loads its
``vllm.general_plugins`` entry points (in the API server, the engine core and its workers).

On by default wherever the package is installed beside vLLM (`up`'s engines, the engine image);
``ENGINE_PATCHES=off`` in an engine's environment leaves vLLM as it is. Imports nothing of the
gateway: this runs with vLLM's dependencies only.

A patch leaves with its module and its line in ``PATCHES``, once vLLM ships the fix.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from mistral_serve.engine_plugin import arguments_start, drop_info_cache, parser_cycle
from mistral_serve.engine_plugin.guard import apply_patches, report

PATCHES = (drop_info_cache.PATCH, parser_cycle.PATCH, arguments_start.PATCH)
SWITCH = "ENGINE_PATCHES"  # on (default) | off


def register() -> None:
    """vLLM's entry point. Reads the one switch from the environment (this is the process's
    boundary) and reports once per engine: from the API server, not from the processes it
    starts (the same vLLM, the same outcome)."""
    import vllm

    reports = multiprocessing.parent_process() is None
    setting = os.environ.get(SWITCH, "on").strip().lower()
    with engine_log() as log:
        if setting == "off":
            if reports:
                log.info("mistral-serve engine patches off (%s=off)", SWITCH)
            return
        if setting != "on" and reports:
            log.warning("%s=%r is neither on nor off: patches stay on", SWITCH, setting)
        outcomes = apply_patches(PATCHES, vllm.__version__)
        if reports:
            report(outcomes, vllm.__version__, log)


@contextmanager
def engine_log() -> Iterator[logging.Logger]:
    """A logger under vLLM's. The API server loads plugins while it builds its argument parser,
    before it configures logging; until then this logger writes to stderr itself."""
    log = logging.getLogger("vllm.plugins.mistral_serve")
    if logging.getLogger("vllm").handlers:
        yield log
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(asctime)s %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False
    try:
        yield log
    finally:
        log.removeHandler(handler)
        log.setLevel(logging.NOTSET)
        log.propagate = True
