"""Chunk contexts written by the enrichment step, and how they join their chunk.

Free of Docling: the store step, on the light workflow worker, reads them too."""

from __future__ import annotations

import json

from docindex.blobstore import BlobStore


async def load_contexts(blobs: BlobStore, keys: list[str]) -> list[str] | None:
    """Chunk contexts written by the enrichment step, in chunk order; None without any."""
    if not keys:
        return None
    contexts: list[str] = []
    for key in keys:  # in chunk order: the workflow lists them that way
        contexts.extend(json.loads(await blobs.get(key)))
    return contexts


def with_context(embed_text: str, context: str | None) -> str:
    """What is embedded: the chunk's situating context, when it has one, then the chunk."""
    return f"{context}\n\n{embed_text}" if context else embed_text
