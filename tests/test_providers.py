"""Voyage embeddings and Anthropic enrichment end to end, through the real SDKs against fake
servers on 127.0.0.1 that speak the providers' wire formats.

Each test runs its own hosted worker (LLM and hosted-embedding queues) with provider
settings; the session's workflow and CPU workers do the rest."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from pydantic import SecretStr
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client

from api.app import create_app
from docindex.auth import create_api_key
from docindex.config import Settings
from docindex.ids import document_workflow_id, run_workflow_id
from workers.factory import Queue, build_workers
from workflows.indexing_contract import RunSummary

from .conftest import TenantClient, run_workers
from .fakes import FakeAnthropic, FakeVoyage
from .fakes.anthropic import last_user_text
from .helpers import run_input
from .test_runs import record_run

VOYAGE_KEY = "voyage-test-key"
ANTHROPIC_KEY = "anthropic-test-key"
NOTE = """# Otters of the northern coast

Sea otters use stones as tools to open shellfish, and they rest in kelp forests.

## Diet

They eat urchins, crabs and clams, and need a quarter of their weight in food each day.

## Population

Hunting almost ended them; protection since 1911 has brought them back along the coast.
"""


def provider_settings(settings: Settings, **update: Any) -> Settings:
    suffix = uuid.uuid4().hex[:6]
    return settings.model_copy(
        update={
            "llm_task_queue": f"llm-{suffix}",
            "embed_api_task_queue": f"embed-api-{suffix}",
            **update,
        }
    )


def voyage_provider(
    settings: Settings, voyage: FakeVoyage, key: str = VOYAGE_KEY, **update: Any
) -> Settings:
    """Settings that embed with Voyage, served by the fake at ``voyage``."""
    return provider_settings(
        settings,
        embedder="voyage",
        voyage_api_key=SecretStr(key),
        voyage_base_url=voyage.base_url,
        **update,
    )


@contextlib.asynccontextmanager
async def hosted_worker(client: Client, settings: Settings) -> AsyncIterator[None]:
    async with build_workers(Queue.HOSTED, client, settings, settings.database_url or "") as ws:
        async with run_workers(ws):
            yield


async def index(
    client: Client, settings: Settings, text: str, copies: int = 1, tenant: str = "default"
) -> str:
    """Record and start a run of ``copies`` Markdown documents with the given settings, for
    ``tenant`` (its first run makes its first generation: a provider test's spec is the
    tenant's own, never another test's)."""
    run_id = await record_run(settings, copies, body=text, tenant=tenant)
    handle = await client.start_workflow(
        "IndexingWorkflow",
        run_input(settings, run_id, copies, tenant_id=tenant),
        id=run_workflow_id(run_id),
        task_queue=settings.workflow_task_queue,
        result_type=RunSummary,
    )
    await asyncio.wait_for(handle.result(), timeout=180)
    return run_id


@contextlib.asynccontextmanager
async def api_for(
    settings: Settings, client: Client, tenant: str
) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(
        settings.model_copy(update={"temporal_address": client.service_client.config.target_host})
    )
    async with app.router.lifespan_context(app):
        key = await create_api_key(app.state.resources.pool, tenant)
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),
            base_url="http://docindex",
            headers={"Authorization": f"Bearer {key}"},
        ) as http:
            yield http


@pytest.fixture
def voyage() -> Any:
    with FakeVoyage(api_key=VOYAGE_KEY) as fake:
        yield fake
        assert not fake.internal_errors


@pytest.fixture
def anthropic_api() -> Any:
    with FakeAnthropic(api_key=ANTHROPIC_KEY, responder=respond) as fake:
        yield fake
        assert not fake.internal_errors


def respond(request: dict[str, Any]) -> Any:
    """Answer like a model: JSON for the document prompt, a sentence for a chunk; with a
    thinking block first, which the client must skip by type."""
    prompt = last_user_text(request)
    thinking = {"type": "thinking", "thinking": "Let me look.", "signature": "sig"}
    if "JSON object" in prompt:
        answer = json.dumps(
            {
                "title": "Otters of the northern coast",
                "summary": "A note on sea otters.",
                "document_type": "note",
                "keywords": ["otters", "kelp", "conservation"],
            }
        )
    else:
        answer = "This passage is from a natural history note about sea otters."
    return [thinking, {"type": "text", "text": answer}]


async def test_a_batch_of_small_documents_embeds_with_voyage_one_activity_each(
    tenant_client: TenantClient, client: Client, settings: Settings, voyage: FakeVoyage
) -> None:
    """The hosted API's rate limit is its queue's activities per second: a batch of small
    documents still sends each document's requests as an activity of its own."""
    tenant = f"t-{uuid.uuid4().hex[:10]}"
    api = await tenant_client(tenant=tenant)
    voyage_settings = voyage_provider(
        settings, voyage, batch_documents=4, batch_min_run_documents=2
    )
    async with hosted_worker(client, voyage_settings):
        run_id = await index(client, voyage_settings, NOTE, copies=3, tenant=tenant)

    run = (await api.get(f"/v1/runs/{run_id}")).json()
    assert run["status"] == "completed"
    assert all(d["tokens"]["voyage/voyage-3.5"]["embedding_tokens"] > 0 for d in run["documents"])
    batches = [
        wf.id
        async for wf in client.list_workflows(
            f"IndexingRunId = '{run_id}' AND WorkflowType = 'DocumentBatchWorkflow'"
        )
    ]
    assert len(batches) == 1
    history = await client.get_workflow_handle(batches[0]).fetch_history()
    scheduled = [
        e.activity_task_scheduled_event_attributes
        for e in history.events
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
    ]
    embeds = [a for a in scheduled if a.activity_type.name.startswith("embed")]
    assert [a.activity_type.name for a in embeds] == ["embed_chunks"] * 3
    assert {a.task_queue.name for a in embeds} == {voyage_settings.embed_api_task_queue}
    assert len(voyage.requests_to("/v1/embeddings")) == 3


async def test_voyage_embeds_in_batches_retries_after_429_and_records_cost(
    tenant_client: TenantClient, client: Client, settings: Settings, voyage: FakeVoyage
) -> None:
    tenant = f"t-{uuid.uuid4().hex[:10]}"
    api = await tenant_client(tenant=tenant)
    voyage_settings = voyage_provider(
        settings, voyage, chunk_max_tokens=16, voyage_max_texts_per_request=4
    )
    voyage.max_texts = 4  # the server enforces it too: a request over it would be a 400
    voyage.fail_next(1, status=429, retry_after=2)
    async with hosted_worker(client, voyage_settings):
        run_id = await index(client, voyage_settings, NOTE, tenant=tenant)

    calls = voyage.requests_to("/v1/embeddings")
    assert calls[0].status == 429 and calls[1].status == 200
    # Temporal waited as long as Voyage asked before the next attempt.
    assert calls[1].received_at - calls[0].received_at >= 1.9
    served = [c for c in calls if c.status == 200]
    assert len(served) >= 2 and all(len(c.body["input"]) <= 4 for c in served)
    assert {c.body["input_type"] for c in served} == {"document"}

    run = (await api.get(f"/v1/runs/{run_id}")).json()
    doc = run["documents"][0]
    assert run["status"] == "completed" and doc["chunk_count"] == sum(
        len(c.body["input"]) for c in served
    )
    usage = doc["tokens"]["voyage/voyage-3.5"]
    assert usage["embedding_tokens"] == voyage.tokens_used > 0
    assert doc["cost_usd"] == pytest.approx(voyage.tokens_used * 0.06 / 1e6)
    assert run["cost_usd"] == pytest.approx(doc["cost_usd"])

    # Search embeds the query with the documents' model (input_type=query) and finds them;
    # the session's MiniLM chunks in the same table are not compared with Voyage vectors.
    async with api_for(voyage_settings, client, tenant) as voyage_api:
        found = (
            await voyage_api.post("/v1/search", json={"query": "otters kelp forests", "top_k": 3})
        ).json()
    assert found["model"] == "voyage-3.5"
    assert found["results"][0]["document_id"] == doc["document_id"]
    assert voyage.requests_to("/v1/embeddings")[-1].body["input_type"] == "query"


async def test_an_invalid_voyage_key_fails_the_document_once_with_a_typed_error(
    tenant_client: TenantClient, client: Client, settings: Settings, voyage: FakeVoyage
) -> None:
    tenant = f"t-{uuid.uuid4().hex[:10]}"
    api = await tenant_client(tenant=tenant)
    bad = voyage_provider(settings, voyage, key="wrong-key")
    async with hosted_worker(client, bad):
        run_id = await index(client, bad, NOTE, tenant=tenant)
    run = (await api.get(f"/v1/runs/{run_id}")).json()
    doc = run["documents"][0]
    assert (doc["status"], doc["error_type"]) == ("failed", "ProviderAuthError")
    assert "VOYAGE_API_KEY" in doc["error"]
    history = await client.get_workflow_handle(
        document_workflow_id(run_id, doc["document_id"])
    ).fetch_history()
    embed_attempts = [
        e.activity_task_started_event_attributes.attempt
        for e in history.events
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED
    ]
    assert max(embed_attempts) == 1, "a bad key must not be retried"
    assert len(voyage.requests_to("/v1/embeddings")) == 1


async def test_anthropic_enrichment_adds_metadata_and_cached_chunk_contexts(
    tenant_client: TenantClient,
    client: Client,
    settings: Settings,
    anthropic_api: FakeAnthropic,
) -> None:
    tenant = f"t-{uuid.uuid4().hex[:10]}"
    api = await tenant_client(tenant=tenant)
    enriching = provider_settings(
        settings,
        enricher="anthropic",
        anthropic_api_key=SecretStr(ANTHROPIC_KEY),
        anthropic_base_url=anthropic_api.base_url,
        chunk_max_tokens=32,
        context_chunks_per_activity=2,
    )
    anthropic_api.fail_next(1, status=429, retry_after=1)
    async with hosted_worker(client, enriching):
        run_id = await index(client, enriching, NOTE, tenant=tenant)

    run = (await api.get(f"/v1/runs/{run_id}")).json()
    doc = run["documents"][0]
    assert run["status"] == "completed", run
    detail = (await api.get(f"/v1/documents/{doc['document_id']}")).json()
    enrichment = detail["metadata"]["enrichment"]
    assert enrichment["status"] == "enriched"
    assert enrichment["title"] == "Otters of the northern coast"
    assert enrichment["keywords"] == ["otters", "kelp", "conservation"]

    calls = [c for c in anthropic_api.requests_to("/v1/messages") if c.status == 200]
    # One call for the document, one per chunk; every one marks the document for caching.
    assert len(calls) == 1 + doc["chunk_count"]
    for call in calls:
        first_block = call.body["messages"][0]["content"][0]
        assert first_block["cache_control"] == {"type": "ephemeral"}
        assert first_block["text"].startswith("<document>")
    usage = doc["tokens"]["anthropic/claude-haiku-4-5"]
    assert usage["requests"] == len(calls)
    assert usage["cache_write_tokens"] > 0 and usage["cache_read_tokens"] > 0
    assert usage["output_tokens"] > 0 and doc["cost_usd"] > 0

    # The context is stored with each chunk and comes back with search results.
    hits = (await api.post("/v1/search", json={"query": "sea otters diet", "top_k": 20})).json()
    mine = [h for h in hits["results"] if h["document_id"] == doc["document_id"]]
    assert mine and all(h["context"].startswith("This passage is from") for h in mine)


async def test_enrichment_without_a_key_is_skipped_not_failed(
    tenant_client: TenantClient, client: Client, settings: Settings
) -> None:
    tenant = f"t-{uuid.uuid4().hex[:10]}"
    api = await tenant_client(tenant=tenant)
    keyless = provider_settings(settings, enricher="anthropic", anthropic_api_key=None)
    async with hosted_worker(client, keyless):
        run_id = await index(client, keyless, NOTE, tenant=tenant)
    doc = (await api.get(f"/v1/runs/{run_id}")).json()["documents"][0]
    assert doc["status"] == "completed"
    detail = (await api.get(f"/v1/documents/{doc['document_id']}")).json()
    assert detail["metadata"]["enrichment"]["status"] == "skipped"
    assert "ANTHROPIC_API_KEY" in detail["metadata"]["enrichment"]["reason"]


async def test_llm_queue_rate_is_shared_by_all_workers(
    client: Client, settings: Settings, anthropic_api: FakeAnthropic, workers: None
) -> None:
    """Two hosted workers, one queue limited to 2 calls/s: the calls never come faster."""
    limited = provider_settings(
        settings,
        enricher="anthropic",
        anthropic_api_key=SecretStr(ANTHROPIC_KEY),
        anthropic_base_url=anthropic_api.base_url,
        chunk_max_tokens=16,
        context_chunks_per_activity=1,
        anthropic_requests_per_second=2.0,
    )
    # A second connection, as a worker on another machine would have (one client may not
    # run two workers on one queue).
    other = await Client.connect(
        client.service_client.config.target_host, data_converter=client.data_converter
    )
    async with hosted_worker(client, limited), hosted_worker(other, limited):
        await index(client, limited, NOTE)
    times = sorted(
        c.received_at
        for c in anthropic_api.requests_to("/v1/messages")
        if "<passage>" in json.dumps(c.body)
    )
    assert len(times) >= 6
    # Temporal's token bucket may let the first call or two through at once; after that
    # the pace is the configured rate, across both workers.
    span = times[-1] - times[1]
    assert span >= (len(times) - 3) / 2.0, f"{len(times)} calls in {span:.2f}s"


@pytest.mark.parametrize("max_wait_s", [0.05, None], ids=["wait-50ms", "cpu-default-no-wait"])
async def test_concurrent_embed_activities_share_forward_passes(
    tmp_path, max_wait_s: float | None
) -> None:
    """Eight embed activities at once, through the real activity code: the local model runs
    far fewer, larger forward passes than there are activities. On CPU the default is not
    to wait for company, yet requests queued during a pass still share the next one."""
    from temporalio.testing import ActivityEnvironment

    from activities.embedding import EmbeddingActivities
    from docindex.blobstore import BlobStore
    from docindex.components import Components
    from docindex.pipeline.embedders.local import BatchStats
    from docindex.spec import LocalEmbedder
    from docindex.steps.embed import EmbedSteps
    from docindex.steps.models import EmbedInput

    components = Components(
        Settings(
            embed_device="cpu",
            embed_micro_batch_wait_ms=None if max_wait_s is None else max_wait_s * 1000,
        )
    )
    embedder = components.embedder(LocalEmbedder())
    assert embedder.batcher.max_wait_s == (0.0 if max_wait_s is None else max_wait_s)
    # The model is loaded once per process and shared: count from a fresh tally.
    embedder.batcher.stats = BatchStats()
    blobs = BlobStore(None, tmp_path)
    steps = EmbeddingActivities(EmbedSteps(blobs, components))
    inputs = []
    for i in range(8):
        chunks = [{"embed_text": f"document {i} passage {j} about rivers"} for j in range(3)]
        await blobs.put(f"chunks/{i}.json", json.dumps(chunks).encode())
        inputs.append(
            EmbedInput(
                tenant_id="default",
                sha256=f"{i:064d}",
                embedder=LocalEmbedder(),
                chunks_key=f"chunks/{i}.json",
                chunk_config="c",
            )
        )
    results = await asyncio.gather(
        *(ActivityEnvironment().run(steps.embed_chunks, inp) for inp in inputs)
    )
    assert all(r.count == 3 and r.dimension == 384 for r in results)
    stats = embedder.batcher.stats
    assert stats.requests == 8
    assert stats.forward_passes <= 3, stats
    assert stats.largest_batch >= 12, stats


async def test_voyage_dimension_and_contextualized_model(voyage: FakeVoyage) -> None:
    from docindex.pipeline.embedders.voyage import VoyageEmbedder

    small = VoyageEmbedder(VOYAGE_KEY, "voyage-3.5", output_dimension=512, base_url=voyage.base_url)
    embedded = await small.embed_documents(["otters use stones", "kelp forests"])
    assert embedded.vectors.shape == (2, 512) and small.model == "voyage-3.5@512"
    assert voyage.requests_to("/v1/embeddings")[-1].body["output_dimension"] == 512

    contextual = VoyageEmbedder(VOYAGE_KEY, "voyage-context-3", base_url=voyage.base_url)
    chunks = ["Otters use stones.", "They rest in kelp.", "Protection brought them back."]
    embedded = await contextual.embed_documents(chunks)
    assert embedded.vectors.shape == (3, 1024) and embedded.tokens > 0
    # One request with the document's chunks together, so each is embedded in context.
    (call,) = voyage.requests_to("/v1/contextualizedembeddings")
    assert call.body["inputs"] == [chunks] and call.body["input_type"] == "document"
