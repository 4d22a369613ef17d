"""The grouping policy a run and a generation's build share (workflows/grouping.py): which
documents go in lock-step batches, side by side, or in a workflow each, and how many to a
batch. Plain functions: no Temporal needed."""

from __future__ import annotations

import pytest

from workflows import grouping
from workflows.options import RunOptions

OPTS = RunOptions()  # 16 to a batch; lock-step from 100 documents, side by side from 32
SMALL, MEDIUM = 2_000, 500_000


@pytest.mark.parametrize(
    ("total", "llm", "size", "expected"),
    [
        (10, False, SMALL, None),  # a few documents: a workflow each
        (40, False, SMALL, True),  # under the lock-step threshold: side by side
        (40, False, MEDIUM, True),
        (100, False, SMALL, False),  # small documents of a big run: lock-step
        (100, False, MEDIUM, True),
        (100, True, SMALL, None),  # an LLM enricher: a workflow each
    ],
)
def test_how_a_document_goes(total: int, llm: bool, size: int, expected: bool | None) -> None:
    assert grouping.grouping(OPTS, total, llm, size) is expected


def test_big_documents_and_batches_of_one_get_a_workflow_each() -> None:
    big = OPTS.model_copy(update={"large_document_bytes": 1_000_000})
    assert grouping.grouping(big, 500, False, 2_000_000) is None
    assert grouping.grouping(big, 500, False, MEDIUM) is True
    off = OPTS.model_copy(update={"batch_documents": 1})
    assert grouping.grouping(off, 500, False, SMALL) is None


def test_side_by_side_batches_fill_the_window() -> None:
    # 8 slots, 2 taken by each side-by-side batch: four batches of ten for 40 documents,
    # not 16, 16 and 8; lock-step batches keep their size. A window of one batch: full ones.
    assert grouping.weight(OPTS, True) == 2 and grouping.weight(OPTS, False) == 1
    assert grouping.group_size(OPTS, 40, False, True) == 10
    assert grouping.group_size(OPTS, 1_000, False, True) == 16
    assert grouping.group_size(OPTS, 1_000, False, False) == 16
    narrow = OPTS.model_copy(update={"max_concurrent_documents": 2})
    assert grouping.weight(narrow, True) == 2
    assert grouping.group_size(narrow, 40, False, True) == 16
