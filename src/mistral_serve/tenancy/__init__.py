"""Tenancy: who is calling (API keys), what each may do (limits), and what each used (ledger).

Built in steps for issue 11; so far the key format (:mod:`~mistral_serve.tenancy.keys`).
"""
