"""Who sent a batch: munge credentials (and, for sites without munge, a shared-key HMAC).

Shared floor: the senders (``run``, ``attach``, ``ingest --send``) sign, the server verifies.
"""
