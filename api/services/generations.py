"""Index generations as a tenant uses them: create one (and start its build), promote one
behind an evaluation gate, compare generations on the tenant's golden queries."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from docindex import repository
from docindex.ids import generation_workflow_id
from docindex.models import GenerationStatus
from docindex.spec import PipelineSpec, resolve_spec
from workflows.starter import start_generation

from ..deps import Resources
from ..schemas import EvalScores, GenerationRequest, PromotionGate

# Hybrid search, the API's default, ranks for the gate: what users get is what is judged.
GATE_TOP_K = 5
_UNPROMOTABLE = (GenerationStatus.BUILDING, GenerationStatus.FAILED, GenerationStatus.CANCELLED)


class GenerationRefused(Exception):
    """The request conflicts with the tenant's generations (HTTP 409)."""


class PromotionRefused(GenerationRefused):
    def __init__(self, message: str, scores: EvalScores) -> None:
        super().__init__(message)
        self.scores = scores


async def create(res: Resources, tenant: str, request: GenerationRequest) -> str:
    """Record a building generation whose omitted parts are the active generation's, and
    start its build; return its id."""
    configured = resolve_spec(res.settings)
    active = await repository.ensure_active_generation(res.pool, tenant, configured)
    spec = PipelineSpec(
        parser=configured.parser,
        chunker=request.chunker or active.spec.chunker,
        embedder=request.embedder or active.spec.embedder,
        enricher=request.enricher or active.spec.enricher,
    )
    generation_id = str(uuid.uuid4())
    workflow_id = generation_workflow_id(tenant, generation_id)
    try:
        await repository.create_generation(res.pool, generation_id, tenant, spec, workflow_id)
    except repository.GenerationConflict as exc:
        raise GenerationRefused(str(exc)) from exc
    try:
        await start_generation(res.temporal, res.settings, tenant, generation_id, spec)
    except BaseException:
        # Not started: a generation left building would block the tenant's next one.
        await repository.finish_build(
            res.pool, generation_id, GenerationStatus.FAILED, "its build could not be started"
        )
        raise
    return generation_id


async def promote(
    res: Resources, tenant: str, generation_id: str, gate: PromotionGate | None
) -> tuple[repository.GenerationRow, str | None, EvalScores | None]:
    """Make the generation the tenant's active one. With a gate, its eval set is run on
    this generation and the active one first, and the promotion is refused when this one
    scores below the bar or below the active one."""
    candidate = await repository.get_generation(res.pool, generation_id, tenant)
    if candidate is None:
        raise LookupError(generation_id)
    if candidate.status in _UNPROMOTABLE:
        raise GenerationRefused(
            f"the generation is {candidate.status}; only a ready or retired one can be promoted"
        )
    scores = None
    if gate is not None:
        scores = await _evaluate(res, tenant, candidate, gate)
        active_score = scores.active_recall_at_5
        if scores.candidate_recall_at_5 < gate.min_recall_at_5:
            raise PromotionRefused(
                f"recall@5 on {gate.eval_set!r} is {scores.candidate_recall_at_5:.3f}, "
                f"below the required {gate.min_recall_at_5:.3f}",
                scores,
            )
        if active_score is not None and scores.candidate_recall_at_5 < active_score:
            raise PromotionRefused(
                f"recall@5 on {gate.eval_set!r} is {scores.candidate_recall_at_5:.3f}, "
                f"worse than the active generation's {active_score:.3f}",
                scores,
            )
    try:
        row, previous = await repository.promote(res.pool, tenant, generation_id)
    except repository.GenerationConflict as exc:
        raise GenerationRefused(str(exc)) from exc
    return row, previous, scores


class UnknownEvalSet(LookupError):
    pass


async def _evaluate(
    res: Resources, tenant: str, candidate: repository.GenerationRow, gate: PromotionGate
) -> EvalScores:
    queries = await repository.get_eval_set(res.pool, tenant, gate.eval_set)
    if queries is None:
        raise UnknownEvalSet(gate.eval_set)
    active = await repository.active_generation(res.pool, tenant)
    candidate_score = await recall_at_5(res, tenant, candidate, queries)
    active_score = (
        None
        if active is None or active.generation_id == candidate.generation_id
        else await recall_at_5(res, tenant, active, queries)
    )
    return EvalScores(
        eval_set=gate.eval_set,
        queries=len(queries),
        candidate_recall_at_5=candidate_score,
        active_recall_at_5=active_score,
        min_recall_at_5=gate.min_recall_at_5,
    )


@dataclass(frozen=True)
class _Judged:
    expected: set[str]
    found: list[str]


async def recall_at_5(
    res: Resources, tenant: str, generation: repository.GenerationRow, queries: list[dict]
) -> float:
    """Mean over the queries of the share of their expected documents among the documents
    of the first five hybrid results in the generation."""
    embedder = await res.embedder(generation.spec.embedder)
    judged: list[_Judged] = []
    for q in queries:
        vector = await embedder.embed_query(q["query"])
        hits = await repository.search_chunks(
            res.pool,
            vector,
            embedder.model,
            GATE_TOP_K,
            tenant,
            text=q["query"],
            mode="hybrid",
            generation_id=generation.generation_id,
        )
        judged.append(_Judged(set(q["document_ids"]), [h.document_id for h in hits]))
    return mean_recall(judged)


def mean_recall(judged: list[_Judged]) -> float:
    if not judged:
        return 0.0
    return sum(len(j.expected & set(j.found)) / len(j.expected) for j in judged) / len(judged)
