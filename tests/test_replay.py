"""The workflows replay the histories recorded from the current version.

Workflow changes ship as a new build under Worker Versioning: runs pinned to the old build
finish on its workers, so the code only ever replays its own histories. A change to the
workflows that alters their commands fails here; it is then a new build, with its
histories recorded again (``python -m tests.histories.record tests/histories/v1``), and
rolled out as docs/operations.md says.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

from workflows.batch import DocumentBatchWorkflow
from workflows.document import DocumentWorkflow
from workflows.generation import GenerationWorkflow
from workflows.indexing import IndexingWorkflow

HISTORIES = sorted((Path(__file__).parent / "histories").glob("*/*.json"))
# Read at collection: the replay itself is async.
RECORDED = {f"{p.parent.name}/{p.stem}": p.read_text() for p in HISTORIES}


def test_there_are_histories_to_replay() -> None:
    labels = {p.parent.name for p in HISTORIES}
    assert labels, "no recorded histories"
    for label in labels:
        names = {p.stem for p in HISTORIES if p.parent.name == label}
        assert {
            "run",
            "one_page_pdf",
            "docx",
            "split_pdf",
            "damaged_pdf",
            "generation",
            "derive_docx",
            "batch_run",
            "batch",
            "generation_batched",
            "derive_batch",
            "generation_side_by_side",
            "derive_side_by_side",
        } <= names, label


@pytest.mark.parametrize("name", sorted(RECORDED))
async def test_recorded_history_replays(name: str) -> None:
    history = WorkflowHistory.from_json(name, RECORDED[name])
    replayer = Replayer(
        workflows=[IndexingWorkflow, DocumentWorkflow, DocumentBatchWorkflow, GenerationWorkflow],
        data_converter=pydantic_data_converter,
    )
    result = await replayer.replay_workflow(history, raise_on_replay_failure=False)
    assert result.replay_failure is None, result.replay_failure
