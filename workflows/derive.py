"""Index a stored document into its tenant's other live generations too: what a
DocumentWorkflow and a batch of small documents do after their store."""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.exceptions import ChildWorkflowError, WorkflowAlreadyStartedError

from docindex.ids import derive_workflow_id
from docindex.models import DocumentTask
from docindex.spec import PipelineSpec
from docindex.steps.models import DeriveTarget

from .document_contract import DocumentInput
from .options import RunOptions


async def derive_into(
    task: DocumentTask, spec: PipelineSpec, options: RunOptions, targets: list[DeriveTarget]
) -> None:
    """One child per generation (one being built, or the one kept for a rollback), with that
    generation's spec and this document's parse, which is reused. A failure there is
    recorded with that generation and does not undo this document's completion."""
    children = []
    for target in targets:
        derived = target.spec.model_copy(update={"parser": spec.parser})
        try:
            children.append(
                await workflow.start_child_workflow(
                    "DocumentWorkflow",
                    DocumentInput(
                        task=task,
                        spec=derived,
                        options=options,
                        generation_id=target.generation_id,
                        derive=True,
                    ),
                    id=derive_workflow_id(target.generation_id, task.document_id),
                    task_queue=options.workflow_task_queue,
                    static_summary=f"{task.filename} → generation {target.generation_id}",
                    execution_timeout=timedelta(seconds=options.document_deadline_s),
                )
            )
        except WorkflowAlreadyStartedError:
            continue  # the generation's build is deriving this document right now
    for child in children:
        try:
            await child
        except ChildWorkflowError:
            workflow.logger.warning("%s: a derive failed", task.filename)
