"""Routing: which engine takes a request. Pure classes over engine statistics (no I/O).

- :mod:`~mistral_serve.routing.prefix`: a request's routable text as chained block hashes, the
  per-engine index of blocks sent, and the home engine every gateway replica agrees on.
- :mod:`~mistral_serve.routing.policies`: ``prefix-load`` (the default), ``least-outstanding``
  and ``round-robin``, picked by ROUTING_POLICY.
"""

from mistral_serve.routing.policies import (
    POLICIES,
    Balance,
    Decision,
    LeastOutstanding,
    PrefixLoad,
    RoundRobin,
    RoutingOptions,
    RoutingPolicy,
    make_policy,
)
from mistral_serve.routing.prefix import PrefixIndex, RouteKey, route_key

__all__ = [
    "POLICIES",
    "Balance",
    "Decision",
    "LeastOutstanding",
    "PrefixIndex",
    "PrefixLoad",
    "RoundRobin",
    "RouteKey",
    "RoutingOptions",
    "RoutingPolicy",
    "make_policy",
    "route_key",
]
