"""Index generations (issue #16): reindex without a gap, a new generation built from the
parses already made, promotion and rollback, the evaluation gate, cancellation."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import asyncpg
import httpx
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client

from docindex import repository
from docindex.config import Settings
from docindex.ids import derive_workflow_id
from docindex.models import DocStatus

from .helpers import DATA, app_with, wait_for_run

DOCS = {
    "pumps.md": "# Pumps\n\nPump P-101 feeds the cooling loop of the east hall. "
    "It is checked every month and its seals are replaced yearly.\n\n"
    "## Spares\n\nTwo spare impellers are kept in store room B.\n",
    "boilers.md": "# Boilers\n\nBoiler B-7 heats the west wing with natural gas. "
    "Its flue is inspected each autumn before the heating season starts.\n",
    "roof.md": "# Roof\n\nThe roof membrane is bitumen over mineral wool, laid in 2011. "
    "Gutters are cleared in spring and autumn.\n",
}


async def upload(http: httpx.AsyncClient, files: dict[str, str]) -> dict[str, str]:
    response = await http.post(
        "/v1/documents",
        files=[("files", (n, t.encode(), "text/markdown")) for n, t in files.items()],
    )
    assert response.status_code == 202, response.text
    body = response.json()
    await wait_for_run(http, body["run_id"], limit_s=120)
    return {d["filename"]: d["document_id"] for d in body["documents"]}


async def search(http: httpx.AsyncClient, query: str, **extra: Any) -> dict[str, Any]:
    response = await http.post("/v1/search", json={"query": query, "top_k": 10, **extra})
    assert response.status_code == 200, response.text
    return response.json()


async def wait_for_generation(
    http: httpx.AsyncClient, generation_id: str, within_s: float = 120
) -> dict[str, Any]:
    deadline = time.monotonic() + within_s
    while True:
        body = (await http.get(f"/v1/generations/{generation_id}")).json()
        if body["status"] != "building":
            return body
        assert time.monotonic() < deadline, body
        await asyncio.sleep(0.3)


async def test_a_reindex_keeps_the_document_searchable(api: httpx.AsyncClient) -> None:
    ids = await upload(api, {"pumps.md": DOCS["pumps.md"]})
    doc = ids["pumps.md"]
    before = {h["chunk_id"] for h in (await search(api, "spare impellers"))["results"]}
    assert before

    response = await api.post(f"/v1/documents/{doc}/reindex")
    assert response.status_code == 200, response.text
    run_id = response.json()["run_id"]
    # Requeued (not yet indexed again), and still served: the old chunks stay until the
    # new ones replace them in one transaction.
    seen = 0
    while True:
        hits = (await search(api, "spare impellers"))["results"]
        assert doc in {h["document_id"] for h in hits}
        seen += 1
        status = (await api.get(f"/v1/runs/{run_id}")).json()["status"]
        if status not in ("queued", "running"):
            break
    assert status == "completed" and seen >= 1
    detail = (await api.get(f"/v1/documents/{doc}")).json()
    assert detail["status"] == "completed" and detail["last_error"] is None
    # Same chunks (deterministic ids), no duplicates.
    after = [h["chunk_id"] for h in (await search(api, "spare impellers"))["results"]]
    assert set(after) == before and len(after) == len(set(after))


async def test_a_reindex_that_fails_keeps_the_old_chunks(
    api: httpx.AsyncClient, database_url: str
) -> None:
    ids = await upload(api, {"boilers.md": DOCS["boilers.md"]})
    doc = ids["boilers.md"]
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
    try:
        chunks = await pool.fetchval(
            "SELECT count(*) FROM chunks WHERE document_id = $1", uuid.UUID(doc)
        )
        assert chunks > 0
        # What a reindex's document workflow records when a step fails for good.
        status = await repository.record_outcome(
            pool, doc, DocStatus.FAILED, "ParseError", "the parser gave up"
        )
        assert status == DocStatus.COMPLETED
        row = await repository.get_document(pool, doc)
        assert row is not None and row.status == DocStatus.COMPLETED
        assert (row.last_error_type, row.last_error) == ("ParseError", "the parser gave up")
        assert (
            await pool.fetchval(
                "SELECT count(*) FROM chunks WHERE document_id = $1", uuid.UUID(doc)
            )
            == chunks
        )
    finally:
        await pool.close()
    detail = (await api.get(f"/v1/documents/{doc}")).json()
    assert detail["status"] == "completed" and detail["last_error_type"] == "ParseError"
    assert doc in {h["document_id"] for h in (await search(api, "flue inspected"))["results"]}


async def test_a_generation_is_built_from_the_parses_then_promoted_and_rolled_back(
    api: httpx.AsyncClient, client: Client
) -> None:
    ids = await upload(api, {n: DOCS[n] for n in ("pumps.md", "boilers.md")})
    first = await search(api, "spare impellers")
    active_id = first["generation_id"]

    # Smaller chunks: the same documents, more chunks, from the same parses.
    response = await api.post(
        "/v1/generations", json={"chunker": {"kind": "hybrid", "max_tokens": 24}}
    )
    assert response.status_code == 202, response.text
    new_id = response.json()["generation_id"]
    assert response.json()["status_url"] == f"/v1/generations/{new_id}"
    assert (await api.post("/v1/generations", json={})).status_code in (202, 409)

    built = await wait_for_generation(api, new_id)
    assert built["status"] == "ready", built
    assert built["documents_total"] == built["documents_done"] == 2, built
    assert built["pipeline"]["chunker"]["max_tokens"] == 24
    generations = (await api.get("/v1/generations")).json()["generations"]
    old = next(g for g in generations if g["generation_id"] == active_id)
    assert old["status"] == "active" and built["chunk_count"] > old["chunk_count"]

    # No re-parse: each derive's prepare step reused the parse the document had.
    history = await client.get_workflow_handle(
        derive_workflow_id(new_id, ids["pumps.md"])
    ).fetch_history()
    results = [
        e.activity_task_completed_event_attributes.result.payloads[0].data
        for e in history.events
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED
    ]
    assert any(b'"reused":true' in r for r in results), "the derive parsed again"

    # Search serves the active generation until the promotion; the new one on request.
    assert (await search(api, "spare impellers"))["generation_id"] == active_id
    candidate = await search(api, "spare impellers", generation_id=new_id)
    assert candidate["generation_id"] == new_id
    assert ids["pumps.md"] in {h["document_id"] for h in candidate["results"]}
    assert {h["chunk_id"] for h in candidate["results"]}.isdisjoint(
        {h["chunk_id"] for h in first["results"]}
    )

    # A document uploaded now goes into both.
    late = await upload(api, {"roof.md": DOCS["roof.md"]})
    for generation in (None, new_id):
        extra = {"generation_id": generation} if generation else {}
        hits = (await search(api, "bitumen roof membrane", **extra))["results"]
        assert late["roof.md"] in {h["document_id"] for h in hits}, generation

    promoted = await api.post(f"/v1/generations/{new_id}/promote")
    assert promoted.status_code == 200, promoted.text
    assert promoted.json()["previous_generation_id"] == active_id
    assert (await search(api, "spare impellers"))["generation_id"] == new_id
    states = {
        g["generation_id"]: g["status"]
        for g in (await api.get("/v1/generations")).json()["generations"]
    }
    assert states[new_id] == "active" and states[active_id] == "retired"
    assert (await api.delete(f"/v1/generations/{new_id}")).status_code == 409

    # Roll back: the retired generation kept up with uploads and serves again at once.
    back = await api.post(f"/v1/generations/{active_id}/promote")
    assert back.status_code == 200, back.text
    rolled = await search(api, "bitumen roof membrane")
    assert rolled["generation_id"] == active_id
    assert late["roof.md"] in {h["document_id"] for h in rolled["results"]}


async def test_promotion_is_refused_below_the_bar_of_the_eval_set(api: httpx.AsyncClient) -> None:
    ids = await upload(api, DOCS)
    response = await api.post(
        "/v1/eval-sets",
        json={
            "name": "facilities",
            "queries": [
                {"query": "spare impellers store room", "document_ids": [ids["pumps.md"]]},
                {
                    "query": "flue inspection before heating season",
                    "document_ids": [ids["boilers.md"]],
                },
                {"query": "bitumen membrane", "document_ids": [ids["roof.md"]]},
            ],
        },
    )
    assert response.status_code == 201, response.text
    assert (await api.get("/v1/eval-sets")).json()[0]["queries"] == 3

    created = await api.post(
        "/v1/generations", json={"chunker": {"kind": "hybrid", "max_tokens": 64}}
    )
    new_id = created.json()["generation_id"]
    assert (await wait_for_generation(api, new_id))["status"] == "ready"

    passed = await api.post(
        f"/v1/generations/{new_id}/promote",
        json={"require": {"eval_set": "facilities", "min_recall_at_5": 1.0}},
    )
    # Three documents, three queries that each name one: both generations find them all.
    assert passed.status_code == 200, passed.text
    scores = passed.json()["evaluation"]
    assert scores["candidate_recall_at_5"] == 1.0 and scores["active_recall_at_5"] == 1.0

    # Below the bar: an eval set whose expected document no generation holds.
    again = await api.post(
        "/v1/generations", json={"chunker": {"kind": "hybrid", "max_tokens": 48}}
    )
    other = again.json()["generation_id"]
    assert (await wait_for_generation(api, other))["status"] == "ready"
    await api.post(
        "/v1/eval-sets",
        json={
            "name": "missing",
            "queries": [{"query": "spare impellers", "document_ids": [str(uuid.uuid4())]}],
        },
    )
    refused = await api.post(
        f"/v1/generations/{other}/promote",
        json={"require": {"eval_set": "missing", "min_recall_at_5": 0.5}},
    )
    assert refused.status_code == 409, refused.text
    body = refused.json()
    assert body["evaluation"]["candidate_recall_at_5"] == 0.0
    assert body["evaluation"]["active_recall_at_5"] == 0.0
    assert "below the required" in body["detail"]
    assert (await search(api, "spare impellers"))["generation_id"] == new_id
    unknown = await api.post(
        f"/v1/generations/{other}/promote", json={"require": {"eval_set": "nope"}}
    )
    assert unknown.status_code == 404


async def test_a_build_that_cannot_work_fails_and_keeps_nothing(
    api: httpx.AsyncClient, database_url: str
) -> None:
    await upload(api, {"pumps.md": DOCS["pumps.md"]})
    # A hosted embedder whose key the workers do not have: every derive fails for good.
    created = await api.post(
        "/v1/generations", json={"embedder": {"kind": "voyage", "model": "voyage-3.5"}}
    )
    assert created.status_code == 202, created.text
    gen = created.json()["generation_id"]
    ended = await wait_for_generation(api, gen)
    assert ended["status"] == "failed", ended
    assert ended["documents_failed"] == 1 and ended["chunk_count"] == 0
    assert "every one of 1 documents failed" in ended["error"]
    assert await _chunks_of(database_url, gen) == 0
    # Search never saw it; the tenant can start another one and delete this one.
    assert (await search(api, "spare impellers"))["generation_id"] != gen
    assert (await api.delete(f"/v1/generations/{gen}")).status_code == 204
    assert (await api.get(f"/v1/generations/{gen}")).status_code == 404


async def test_a_cancelled_build_keeps_nothing(
    api: httpx.AsyncClient, settings: Settings, client: Client, database_url: str
) -> None:
    await upload(api, {"pumps.md": DOCS["pumps.md"]})
    # An API whose builds embed on a queue no worker polls: the build waits until cancelled.
    tenant = api.tenant  # type: ignore[attr-defined]
    async with app_with(settings, client, tenant=tenant, gpu_task_queue="nobody-polls-this") as (
        _,
        http,
    ):
        await http.post("/v1/generations", json={})
        created = await http.post(
            "/v1/generations", json={"chunker": {"kind": "hybrid", "max_tokens": 40}}
        )
        assert created.status_code == 409  # one build at a time
        generations = (await http.get("/v1/generations")).json()["generations"]
        gen = next(g["generation_id"] for g in generations if g["status"] == "building")
        await asyncio.sleep(1.0)
        assert (await http.get(f"/v1/generations/{gen}")).json()["status"] == "building"
        assert (await http.post(f"/v1/generations/{gen}/cancel")).status_code == 202
        ended = await wait_for_generation(http, gen, within_s=60)
        assert ended["status"] == "cancelled" and ended["chunk_count"] == 0
        assert await _chunks_of(database_url, gen) == 0
        assert (await http.delete(f"/v1/generations/{gen}")).status_code == 204


async def _chunks_of(database_url: str, generation_id: str) -> int:
    conn = await asyncpg.connect(database_url)
    try:
        return await conn.fetchval(
            "SELECT count(*) FROM chunks WHERE generation_id = $1", uuid.UUID(generation_id)
        )
    finally:
        await conn.close()


async def test_an_encrypted_pdf_is_reindexed_and_derived_after_its_password_went(
    api: httpx.AsyncClient,
) -> None:
    data = (DATA / "broken" / "r6-user-password.pdf").read_bytes()
    response = await api.post(
        "/v1/documents", files={"files": ("r6.pdf", data)}, data={"password": "asdfzxcv"}
    )
    assert response.status_code == 202, response.text
    run = await wait_for_run(api, response.json()["run_id"])
    assert run["status"] == "completed", run["documents"]
    doc = response.json()["documents"][0]["document_id"]
    # The password is deleted once the document is indexed; its parse is what remains.
    reindexed = await api.post(f"/v1/documents/{doc}/reindex")
    assert reindexed.status_code == 200, reindexed.text
    again = await wait_for_run(api, reindexed.json()["run_id"])
    assert again["status"] == "completed", again["documents"]
    detail = (await api.get(f"/v1/documents/{doc}")).json()
    assert detail["last_error"] is None, detail
    created = await api.post(
        "/v1/generations", json={"chunker": {"kind": "hybrid", "max_tokens": 32}}
    )
    built = await wait_for_generation(api, created.json()["generation_id"])
    assert (built["status"], built["documents_done"]) == ("ready", 1), built


async def test_the_generation_counts_its_chunks_through_reindex_and_delete(
    api: httpx.AsyncClient,
) -> None:
    ids = await upload(api, {n: DOCS[n] for n in ("pumps.md", "roof.md")})

    async def counted() -> int:
        (active,) = [
            g
            for g in (await api.get("/v1/generations")).json()["generations"]
            if g["status"] == "active"
        ]
        return active["chunk_count"]

    docs = {n: (await api.get(f"/v1/documents/{i}")).json() for n, i in ids.items()}
    total = sum(d["chunk_count"] for d in docs.values())
    assert await counted() == total
    reindexed = await api.post(f"/v1/documents/{ids['pumps.md']}/reindex")
    await wait_for_run(api, reindexed.json()["run_id"])
    assert await counted() == total
    assert (await api.delete(f"/v1/documents/{ids['pumps.md']}")).status_code == 204
    assert await counted() == docs["roof.md"]["chunk_count"]


# A build as big builds go (any build of two or more documents here): small documents
# derived in a lock-step batch, the others side by side in another, a 5-page PDF among them
# whose parse ran in page ranges.
BATCHED_BUILD = {
    "batch_documents": 8,
    "batch_min_run_documents": 2,
    "side_by_side_min_run_documents": 2,
    "split_pdf_pages": 2,
    "range_pages": 3,
}
NOTES = {
    f"note-{i}.md": f"# Heron {i}\n\nField note {i}: a grey heron fished the weir at dawn.\n"
    for i in range(4)
}


async def _derive_children(client: Client, tenant: str, generation_id: str) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    async for wf in client.list_workflows(f"TenantId = '{tenant}'"):
        if f"/{generation_id}/" in wf.id:
            found.setdefault(wf.workflow_type, []).append(wf.id)
    return found


async def test_a_big_build_derives_its_small_documents_in_batches(
    settings: Settings, client: Client, workers: None, database_url: str
) -> None:
    pdf = (DATA / "pdf" / "docling" / "multi_page.pdf").read_bytes()
    docx = (DATA / "office" / "docling" / "word_sample.docx").read_bytes()
    assert min(len(pdf), len(docx)) > settings.batch_document_bytes  # not small: side by side
    async with app_with(settings, client, **BATCHED_BUILD) as (app, http):
        response = await http.post(
            "/v1/documents",
            files=[
                *[("files", (n, t.encode(), "text/markdown")) for n, t in NOTES.items()],
                ("files", ("multi_page.pdf", pdf, "application/pdf")),
                ("files", ("word_sample.docx", docx, "application/octet-stream")),
            ],
        )
        assert response.status_code == 202, response.text
        run_id = response.json()["run_id"]
        ids = {d["filename"]: d["document_id"] for d in response.json()["documents"]}
        assert (await wait_for_run(http, run_id, limit_s=180))["status"] == "completed"
        pool = app.state.resources.pool
        tenant = await pool.fetchval(
            "SELECT tenant_id FROM runs WHERE run_id = $1", uuid.UUID(run_id)
        )
        events_before = await pool.fetchval(
            "SELECT count(*) FROM run_events WHERE run_id = $1", uuid.UUID(run_id)
        )

        created = await http.post(
            "/v1/generations", json={"chunker": {"kind": "hybrid", "max_tokens": 24}}
        )
        assert created.status_code == 202, created.text
        gen = created.json()["generation_id"]
        built = await wait_for_generation(http, gen, within_s=180)
        assert built["status"] == "ready", built
        assert (built["documents_total"], built["documents_done"]) == (6, 6), built

        # A batch of the four notes in lock-step, one of the PDF and the DOCX side by side;
        # the PDF, whose parse is in page ranges, handed back to a derive of its own.
        children = await _derive_children(client, tenant, gen)
        assert children.keys() == {"DocumentBatchWorkflow", "DocumentWorkflow"}, children
        assert len(children["DocumentBatchWorkflow"]) == 2, children
        assert children["DocumentWorkflow"] == [derive_workflow_id(gen, ids["multi_page.pdf"])]
        steps: set[str] = set()
        for batch in children["DocumentBatchWorkflow"]:
            history = await client.get_workflow_handle(batch).fetch_history()
            results = [
                e.activity_task_completed_event_attributes.result.payloads[0].data
                for e in history.events
                if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED
            ]
            assert any(b'"reused":true' in r for r in results), f"{batch} parsed again"
            steps |= {
                e.activity_task_scheduled_event_attributes.activity_type.name
                for e in history.events
                if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
            }
        assert {"prepare_documents", "prepare_document"} <= steps, steps

        # Each document is in the new generation, the documents themselves untouched, and
        # a derive writes nothing into the run's events.
        for name, doc in ids.items():
            in_gen = await pool.fetchval(
                "SELECT count(*) FROM chunks WHERE document_id = $1 AND generation_id = $2",
                uuid.UUID(doc),
                uuid.UUID(gen),
            )
            assert in_gen > 0, name
            assert (await http.get(f"/v1/documents/{doc}")).json()["status"] == "completed"
        assert events_before == await pool.fetchval(
            "SELECT count(*) FROM run_events WHERE run_id = $1", uuid.UUID(run_id)
        )
        hits = (await search(http, "grey heron fished the weir", generation_id=gen))["results"]
        assert {ids[n] for n in NOTES} <= {h["document_id"] for h in hits}


async def test_a_cancelled_batched_build_leaves_the_documents_completed(
    settings: Settings, client: Client, workers: None, database_url: str
) -> None:
    tenant = f"t-{uuid.uuid4().hex[:10]}"
    async with app_with(settings, client, tenant=tenant, **BATCHED_BUILD) as (_, http):
        ids = await upload(http, NOTES)
    # Its batch embeds on a queue no worker polls: it waits there until cancelled.
    async with app_with(
        settings, client, tenant=tenant, gpu_task_queue="nobody-polls-this", **BATCHED_BUILD
    ) as (_, http):
        created = await http.post(
            "/v1/generations", json={"chunker": {"kind": "hybrid", "max_tokens": 40}}
        )
        assert created.status_code == 202, created.text
        gen = created.json()["generation_id"]
        deadline = time.monotonic() + 60
        while "DocumentBatchWorkflow" not in await _derive_children(client, tenant, gen):
            assert time.monotonic() < deadline
            await asyncio.sleep(0.3)
        assert (await http.post(f"/v1/generations/{gen}/cancel")).status_code == 202
        ended = await wait_for_generation(http, gen, within_s=60)
        assert ended["status"] == "cancelled" and ended["chunk_count"] == 0, ended
        assert await _chunks_of(database_url, gen) == 0
        # The batch recorded its documents cancelled in the generation, not on them.
        for doc in ids.values():
            detail = (await http.get(f"/v1/documents/{doc}")).json()
            assert detail["status"] == "completed" and detail["last_error"] is None, detail
        hits = (await search(http, "grey heron fished the weir"))["results"]
        assert set(ids.values()) <= {h["document_id"] for h in hits}
