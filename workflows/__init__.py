"""Orchestration only: no I/O, no heavy imports. Read these like the pipeline diagram."""
