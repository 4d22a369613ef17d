"""docindex: durable document indexing for RAG on Temporal."""

__version__ = "0.1.0"
