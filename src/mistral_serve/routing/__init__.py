"""Routing policies: pure choices over engine statistics (no I/O, no framework).

A policy is any callable ``(candidates) -> Engine`` over a non-empty sequence of ready engines
that serve the requested model. Smarter policies (prefix affinity, KV-cache pressure) go beside
the ones here and are picked by name.
"""

from mistral_serve.routing.policies import POLICIES, LeastOutstanding, RoutingPolicy

__all__ = ["POLICIES", "LeastOutstanding", "RoutingPolicy"]
