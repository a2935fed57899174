"""Files and batch jobs: uploads kept on disk with their records in the store (files.py)."""
