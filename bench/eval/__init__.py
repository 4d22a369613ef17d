"""Retrieval quality measured on questions (issue #15 item 5, ``make eval``).

``questions.jsonl`` is a hand-built question set over ``../shared/corpus``; each question
names the file and pages that answer it and an ``evidence`` string that must appear there
(``questions.validate``). ``python -m bench.eval`` indexes the corpus through the service,
asks every question in each search mode and beside a plain BM25 over whole pages, and
reports document recall@5, page recall@5 and MRR@10 (``metrics``). Method and results:
docs/quality.md.
"""
