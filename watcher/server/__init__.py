"""The server: the site store's one writer (docs/server.md).

``daemon`` wires the parts and runs them; ``app`` is the HTTP interface; ``journal`` keeps
accepted batches durable until ``applier`` has stored them; ``permissions`` says who may send
what; ``schedule`` runs the import, the analyses, the mail and the publishing; ``metrics`` counts.
"""
