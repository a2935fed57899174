"""`up`'s orchestration: the engines it starts (see engines.py)."""
