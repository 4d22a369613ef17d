"""The pipeline's steps as plain async functions over the blob store and Postgres.

Activities are thin shells over these (heartbeats, typed Temporal errors); ``docindex
index-local`` calls the very same functions in one process. Heavy parts (Docling, torch)
are imported by the step modules that need them, so import the module you use:
``docindex.steps.prepare``, ``.enrich``, ``.embed``, ``.store``.
"""
