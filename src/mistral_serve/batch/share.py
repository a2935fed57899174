"""How many of a job's requests may start now on a model's engines: the batch runs on idle
capacity and is never in an interactive request's way.

- While any interactive request waits in the model's admission line, no batch request starts
  (batch requests never wait in that line themselves: they start only into free slots).
- A batch holds at most BATCH_MAX_SHARE of the model's engine slots (their concurrency
  targets), counting every gateway's batch requests, so a burst of interactive requests finds
  the rest free at once.
- And never more than the slots free now (every gateway's requests counted).
"""

from __future__ import annotations

import math


def batch_room(*, slots: int, free: int, waiting: int, batch_running: int, share: float) -> int:
    """Batch requests that may start now on a model whose engines have ``slots`` in all,
    ``free`` of them free now, ``waiting`` interactive requests in line, and
    ``batch_running`` batch requests running (every gateway's)."""
    if waiting > 0 or free <= 0:
        return 0
    allowed = math.floor(share * slots + 1e-9) - batch_running
    return max(0, min(allowed, free))
