"""Temporal activities: thin shells over the plain functions in ``docindex.pipeline``.

Activity names are constants in ``workflows.names`` so workflow modules never import this
package (and with it Docling or torch).
"""
