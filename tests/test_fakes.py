"""The fake provider APIs, proven against the real ``voyageai`` and ``anthropic`` SDKs.

Nothing here uses the session services of ``conftest.py``: each test starts its own fake on a
free 127.0.0.1 port. Clients run with retries off (``max_retries=0``) so a test sees the first
failure exactly as a Temporal activity would.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator

import anthropic
import numpy as np
import pytest
import voyageai
import voyageai.error

from tests.fakes import FakeAnthropic, FakeVoyage, ResponderError, count_tokens, embed_text
from tests.fakes.voyage import DEFAULT_API_KEY as VOYAGE_KEY

ANTHROPIC_KEY = "anthropic-test-key"
MODEL = "claude-sonnet-4-6"


@pytest.fixture
def voyage_api() -> Iterator[FakeVoyage]:
    with FakeVoyage(VOYAGE_KEY) as fake:
        yield fake
    assert fake.internal_errors == []


@pytest.fixture
def anthropic_api() -> Iterator[FakeAnthropic]:
    with FakeAnthropic(ANTHROPIC_KEY) as fake:
        yield fake
    assert fake.internal_errors == []


def voyage_client(
    fake: FakeVoyage, key: str = VOYAGE_KEY, retries: int = 0
) -> voyageai.AsyncClient:
    return voyageai.AsyncClient(api_key=key, base_url=fake.base_url, max_retries=retries)


def claude(
    fake: FakeAnthropic, key: str = ANTHROPIC_KEY, retries: int = 0
) -> anthropic.AsyncAnthropic:
    # Strict validation: a field the fake gets wrong fails here instead of passing silently.
    return anthropic.AsyncAnthropic(
        api_key=key, base_url=fake.base_url, max_retries=retries, _strict_response_validation=True
    )


def ask(text: str) -> list[dict[str, object]]:
    return [{"role": "user", "content": text}]


# -- Voyage ------------------------------------------------------------------------------------


async def test_voyage_embeddings_shape_usage_and_request(voyage_api: FakeVoyage) -> None:
    texts = ["Temporal retries failed activities.", "pgvector stores embeddings", "x"]
    result = await voyage_client(voyage_api).embed(
        texts, model="voyage-3.5", input_type="document", output_dimension=512
    )

    vectors = np.asarray(result.embeddings)
    assert vectors.shape == (3, 512)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert np.allclose(vectors[1], embed_text(texts[1], 512), atol=1e-6)
    assert result.total_tokens == sum(count_tokens(t) for t in texts) == voyage_api.tokens_used

    (request,) = voyage_api.requests
    assert (request.method, request.path, request.status) == ("POST", "/v1/embeddings", 200)
    assert request.headers["authorization"] == "Bearer <redacted>"
    assert request.body["input"] == texts
    assert request.body["input_type"] == "document"
    assert request.body["output_dimension"] == 512
    assert request.body["encoding_format"] == "base64"  # the SDK's default, decoded by the SDK


async def test_voyage_default_dimension_and_query_type(voyage_api: FakeVoyage) -> None:
    result = await voyage_client(voyage_api).embed(
        ["a query"], model="voyage-3.5", input_type="query"
    )
    assert len(result.embeddings[0]) == 1024
    assert voyage_api.requests[0].body["input_type"] == "query"


async def test_voyage_shared_words_rank_higher(voyage_api: FakeVoyage) -> None:
    client = voyage_client(voyage_api)
    docs = [
        "The cat sat on the mat in the sun.",
        "Postgres with pgvector builds an HNSW index over embedding vectors.",
        "Temporal workflows survive worker restarts.",
    ]
    d = np.asarray((await client.embed(docs, model="voyage-3.5", input_type="document")).embeddings)
    q = np.asarray(
        (
            await client.embed(["pgvector HNSW index"], model="voyage-3.5", input_type="query")
        ).embeddings[0]
    )
    scores = d @ q
    assert int(np.argmax(scores)) == 1
    assert scores[1] > scores[0] + 0.3 and scores[1] > scores[2] + 0.3


async def test_voyage_matryoshka_prefix(voyage_api: FakeVoyage) -> None:
    # As with Voyage's models, a shorter vector is the normalised head of the longer one.
    full = embed_text("durable execution", 2048)
    head = full[:256] / np.linalg.norm(full[:256])
    assert np.allclose(embed_text("durable execution", 256), head, atol=1e-6)


async def test_voyage_quantised_outputs(voyage_api: FakeVoyage) -> None:
    client = voyage_client(voyage_api)
    as_int8 = await client.embed(["some text"], model="voyage-3.5", output_dtype="int8")
    assert len(as_int8.embeddings[0]) == 1024
    assert all(-128 <= v <= 127 and isinstance(v, int) for v in as_int8.embeddings[0])
    as_bits = await client.embed(["some text"], model="voyage-3.5", output_dtype="ubinary")
    assert len(as_bits.embeddings[0]) == 1024 // 8


async def test_voyage_too_many_texts(voyage_api: FakeVoyage) -> None:
    client = voyage_client(voyage_api)
    with pytest.raises(voyageai.error.InvalidRequestError) as caught:
        await client.embed(["t"] * 1001, model="voyage-3.5")
    assert caught.value.http_status == 400
    assert "batch size limit is 1000" in caught.value.user_message

    voyage_api.max_texts = 3  # tests can make the limits small
    await client.embed(["a", "b", "c"], model="voyage-3.5")
    with pytest.raises(voyageai.error.InvalidRequestError):
        await client.embed(["a", "b", "c", "d"], model="voyage-3.5")


async def test_voyage_too_many_tokens(voyage_api: FakeVoyage) -> None:
    voyage_api.max_total_tokens = 10
    client = voyage_client(voyage_api)
    await client.embed(["one two three four five", "six seven eight nine ten"], model="voyage-3.5")
    with pytest.raises(voyageai.error.InvalidRequestError) as caught:
        await client.embed(
            ["one two three four five", "six seven eight nine ten eleven"], model="voyage-3.5"
        )
    assert "max allowed tokens per submitted batch is 10" in caught.value.user_message


async def test_voyage_truncation(voyage_api: FakeVoyage) -> None:
    voyage_api.context_length = 4
    client = voyage_client(voyage_api)
    long_text = "one two three four five six"
    result = await client.embed([long_text], model="voyage-3.5", truncation=True)
    assert result.total_tokens == 4
    assert np.allclose(result.embeddings[0], embed_text("one two three four"), atol=1e-6)
    with pytest.raises(voyageai.error.InvalidRequestError):
        await client.embed([long_text], model="voyage-3.5", truncation=False)


async def test_voyage_rejects_bad_parameters(voyage_api: FakeVoyage) -> None:
    client = voyage_client(voyage_api)
    with pytest.raises(voyageai.error.InvalidRequestError):
        await client.embed(["x"], model="voyage-3.5", output_dimension=300)
    with pytest.raises(voyageai.error.InvalidRequestError):
        await client.embed(["x"], model="no-such-model")


async def test_voyage_wrong_key(voyage_api: FakeVoyage) -> None:
    with pytest.raises(voyageai.error.AuthenticationError) as caught:
        await voyage_client(voyage_api, key="wrong").embed(["x"], model="voyage-3.5")
    assert caught.value.http_status == 401
    assert caught.value.json_body == {"detail": "Provided API key is invalid."}


async def test_voyage_429_exposes_retry_after(voyage_api: FakeVoyage) -> None:
    voyage_api.fail_next(1, 429, retry_after=7)
    client = voyage_client(voyage_api)
    with pytest.raises(voyageai.error.RateLimitError) as caught:
        await client.embed(["x"], model="voyage-3.5")
    error = caught.value
    assert error.http_status == 429
    assert error.headers["Retry-After"] == "7"  # aiohttp's headers: case-insensitive
    assert error.headers.get("retry-after") == "7"

    await client.embed(["x"], model="voyage-3.5")  # the fault was used up
    assert [r.status for r in voyage_api.requests] == [429, 200]
    assert voyage_api.request_count == 2 and voyage_api.pending_faults == 0


async def test_voyage_server_errors(voyage_api: FakeVoyage) -> None:
    client = voyage_client(voyage_api)
    voyage_api.fail_next(1, 500)
    voyage_api.fail_next(1, 503, retry_after=2)
    with pytest.raises(voyageai.error.ServerError) as server_error:
        await client.embed(["x"], model="voyage-3.5")
    assert server_error.value.http_status == 500
    with pytest.raises(voyageai.error.ServiceUnavailableError) as unavailable:
        await client.embed(["x"], model="voyage-3.5")
    assert unavailable.value.http_status == 503
    assert unavailable.value.headers["Retry-After"] == "2"


async def test_voyage_max_retries_counts_attempts(voyage_api: FakeVoyage) -> None:
    # voyageai's max_retries is tenacity's stop_after_attempt: 1 means one attempt, no retry.
    voyage_api.fail_next(1, 429, retry_after=1)
    with pytest.raises(voyageai.error.RateLimitError):
        await voyage_client(voyage_api, retries=1).embed(["x"], model="voyage-3.5")
    assert voyage_api.request_count == 1


async def test_voyage_fault_for_one_path(voyage_api: FakeVoyage) -> None:
    voyage_api.fail_next(1, 429, path="/v1/contextualizedembeddings")
    client = voyage_client(voyage_api)
    await client.embed(["x"], model="voyage-3.5")  # another path: not affected
    with pytest.raises(voyageai.error.RateLimitError):
        await client.contextualized_embed([["x"]], model="voyage-context-3", input_type="document")


async def test_voyage_contextualized(voyage_api: FakeVoyage) -> None:
    client = voyage_client(voyage_api)
    docs = [["Chunk one about Temporal.", "Chunk two about retries."], ["Only chunk."]]
    result = await client.contextualized_embed(
        docs, model="voyage-context-3", input_type="document", output_dimension=256
    )
    assert [len(r.embeddings) for r in result.results] == [2, 1]
    assert all(len(v) == 256 for r in result.results for v in r.embeddings)
    assert result.total_tokens == sum(count_tokens(c) for d in docs for c in d)
    # A lone chunk (a query, say) is embedded exactly as /embeddings would.
    assert np.allclose(result.results[1].embeddings[0], embed_text("Only chunk.", 256), atol=1e-6)

    auto = await client.contextualized_embed(
        ["one two three four five six seven"],
        model="voyage-context-3",
        input_type="document",
        enable_auto_chunking=True,
        chunk_size=3,
        chunk_overlap=1,
    )
    assert auto.results[0].chunk_texts == ["one two three", "three four five", "five six seven"]

    with pytest.raises(voyageai.error.InvalidRequestError):
        await client.embed(["x"], model="voyage-context-3")  # wrong endpoint for the model


def test_voyage_sync_client(voyage_api: FakeVoyage) -> None:
    client = voyageai.Client(api_key=VOYAGE_KEY, base_url=voyage_api.base_url, max_retries=0)
    assert len(client.embed(["x"], model="voyage-3.5").embeddings[0]) == 1024
    voyage_api.fail_next(1, 429, retry_after=5)
    with pytest.raises(voyageai.error.RateLimitError) as caught:
        client.embed(["x"], model="voyage-3.5")
    assert caught.value.headers["retry-after"] == "5"  # requests' headers: case-insensitive


# -- Anthropic -----------------------------------------------------------------------------------


async def test_anthropic_message(anthropic_api: FakeAnthropic) -> None:
    async with claude(anthropic_api) as client:
        message = await client.messages.create(
            model=MODEL, max_tokens=256, messages=ask("Summarise the pgvector documentation")
        )
    assert message.type == "message" and message.role == "assistant" and message.model == MODEL
    assert [b.type for b in message.content] == ["text"]
    assert "pgvector" in message.content[0].text
    assert message.stop_reason == "end_turn"
    assert message.usage.input_tokens == count_tokens("Summarise the pgvector documentation")
    assert message.usage.output_tokens == count_tokens(message.content[0].text)
    assert message.usage.cache_creation_input_tokens == 0
    assert message.usage.cache_read_input_tokens == 0

    (request,) = anthropic_api.requests
    assert (request.method, request.path) == ("POST", "/v1/messages")
    assert request.headers["anthropic-version"]
    # anthropic 2.x sends api_key as a Bearer token; the API also takes x-api-key.
    assert "authorization" in request.headers or "x-api-key" in request.headers
    assert request.body["max_tokens"] == 256


async def test_anthropic_base_url_from_environment(
    anthropic_api: FakeAnthropic, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ANTHROPIC_BASE_URL", anthropic_api.base_url)
    async with anthropic.AsyncAnthropic(api_key=ANTHROPIC_KEY, max_retries=0) as client:
        await client.messages.create(model=MODEL, max_tokens=10, messages=ask("hi"))
    assert anthropic_api.request_count == 1


async def test_anthropic_x_api_key_header(anthropic_api: FakeAnthropic) -> None:
    # The documented header works too: a client that sends x-api-key itself is accepted.
    async with anthropic.AsyncAnthropic(
        auth_token="unused",
        base_url=anthropic_api.base_url,
        max_retries=0,
        default_headers={"x-api-key": ANTHROPIC_KEY, "Authorization": anthropic.Omit()},
    ) as client:
        await client.messages.create(model=MODEL, max_tokens=10, messages=ask("hi"))
    headers = anthropic_api.requests[0].headers
    assert headers["x-api-key"] == "<redacted>" and "authorization" not in headers


async def test_anthropic_wrong_key(anthropic_api: FakeAnthropic) -> None:
    async with claude(anthropic_api, key="wrong") as client:
        with pytest.raises(anthropic.AuthenticationError) as caught:
            await client.messages.create(model=MODEL, max_tokens=10, messages=ask("hi"))
    error = caught.value
    assert error.status_code == 401
    assert error.type == "authentication_error"
    assert error.body["error"]["type"] == "authentication_error"
    assert error.request_id and error.request_id.startswith("req_")


async def test_anthropic_429_exposes_retry_after(anthropic_api: FakeAnthropic) -> None:
    anthropic_api.fail_next(1, 429, retry_after=3)
    async with claude(anthropic_api) as client:
        with pytest.raises(anthropic.RateLimitError) as caught:
            await client.messages.create(model=MODEL, max_tokens=10, messages=ask("hi"))
        error = caught.value
        assert error.status_code == 429
        assert error.response.headers["retry-after"] == "3"
        assert error.type == "rate_limit_error"
        await client.messages.create(model=MODEL, max_tokens=10, messages=ask("hi"))
    assert [r.status for r in anthropic_api.requests] == [429, 200]


async def test_anthropic_overloaded_and_server_error(anthropic_api: FakeAnthropic) -> None:
    anthropic_api.fail_next(1, 529)
    anthropic_api.fail_next(1, 500)
    async with claude(anthropic_api) as client:
        with pytest.raises(anthropic.OverloadedError) as overloaded:
            await client.messages.create(model=MODEL, max_tokens=10, messages=ask("hi"))
        assert overloaded.value.status_code == 529
        assert overloaded.value.type == "overloaded_error"
        assert isinstance(overloaded.value, anthropic.InternalServerError)
        with pytest.raises(anthropic.InternalServerError) as server_error:
            await client.messages.create(model=MODEL, max_tokens=10, messages=ask("hi"))
        assert server_error.value.status_code == 500


async def test_anthropic_sdk_retry_honours_retry_after(anthropic_api: FakeAnthropic) -> None:
    anthropic_api.fail_next(1, 429, retry_after=0.3)
    async with claude(anthropic_api, retries=1) as client:
        await client.messages.create(model=MODEL, max_tokens=10, messages=ask("hi"))
    first, second = anthropic_api.requests
    assert (first.status, second.status) == (429, 200)
    assert second.received_at - first.received_at >= 0.3
    assert second.headers["x-stainless-retry-count"] == "1"


async def test_anthropic_prompt_cache(anthropic_api: FakeAnthropic) -> None:
    document = "Temporal keeps workflow state durable. " * 20
    system = [
        {"type": "text", "text": "You write situating context for chunks."},
        {"type": "text", "text": document, "cache_control": {"type": "ephemeral"}},
    ]
    question = "Situate this chunk: workflow state"
    prefix = count_tokens("You write situating context for chunks.") + count_tokens(document)
    async with claude(anthropic_api) as client:
        first = await client.messages.create(
            model=MODEL, max_tokens=100, system=system, messages=ask(question)
        )
        second = await client.messages.create(
            model=MODEL, max_tokens=100, system=system, messages=ask(question)
        )
        other_model = await client.messages.create(
            model="claude-haiku-4-5", max_tokens=100, system=system, messages=ask(question)
        )
    assert first.usage.cache_creation_input_tokens == prefix
    assert first.usage.cache_read_input_tokens == 0
    assert first.usage.cache_creation.ephemeral_5m_input_tokens == prefix
    assert first.usage.input_tokens == count_tokens(question)
    assert second.usage.cache_creation_input_tokens == 0
    assert second.usage.cache_read_input_tokens == prefix
    assert second.usage.input_tokens == count_tokens(question)
    assert other_model.usage.cache_read_input_tokens == 0  # caches are per model

    sent = anthropic_api.requests[0].body["system"]
    assert sent[1]["cache_control"] == {"type": "ephemeral"}


async def test_anthropic_prompt_cache_reads_earlier_breakpoint(
    anthropic_api: FakeAnthropic,
) -> None:
    # Chunk-by-chunk enrichment: the document is cached once, each chunk's question differs.
    document = {
        "type": "text",
        "text": "A long document. " * 30,
        "cache_control": {"type": "ephemeral", "ttl": "1h"},
    }
    doc_tokens = count_tokens(document["text"])
    async with claude(anthropic_api) as client:
        usages = [
            (
                await client.messages.create(
                    model=MODEL,
                    max_tokens=50,
                    messages=[{"role": "user", "content": [document, {"type": "text", "text": q}]}],
                )
            ).usage
            for q in ("chunk one", "chunk two")
        ]
    assert usages[0].cache_creation.ephemeral_1h_input_tokens == doc_tokens
    assert usages[1].cache_read_input_tokens == doc_tokens
    assert usages[1].cache_creation_input_tokens == 0
    assert usages[1].input_tokens == count_tokens("chunk two")

    anthropic_api.clear_cache()
    async with claude(anthropic_api) as client:
        again = await client.messages.create(
            model=MODEL,
            max_tokens=50,
            messages=[{"role": "user", "content": [document, {"type": "text", "text": "x"}]}],
        )
    assert again.usage.cache_creation_input_tokens == doc_tokens


async def test_anthropic_min_cache_tokens(anthropic_api: FakeAnthropic) -> None:
    anthropic_api.min_cache_tokens = 1024  # as the real API: short prefixes are not cached
    system = [{"type": "text", "text": "short", "cache_control": {"type": "ephemeral"}}]
    async with claude(anthropic_api) as client:
        message = await client.messages.create(
            model=MODEL, max_tokens=10, system=system, messages=ask("hi")
        )
    assert message.usage.cache_creation_input_tokens == 0
    assert message.usage.input_tokens == count_tokens("short") + count_tokens("hi")


async def test_anthropic_thinking_block(anthropic_api: FakeAnthropic) -> None:
    async with claude(anthropic_api) as client:
        message = await client.messages.create(
            model=MODEL,
            max_tokens=2048,
            thinking={"type": "enabled", "budget_tokens": 1024},
            messages=ask("Extract metadata from the invoice"),
        )
        plain = await client.messages.create(model=MODEL, max_tokens=2048, messages=ask("hi"))
        with pytest.raises(anthropic.BadRequestError):
            await client.messages.create(
                model=MODEL,
                max_tokens=1000,
                thinking={"type": "enabled", "budget_tokens": 1024},
                messages=ask("hi"),
            )
    assert [b.type for b in message.content] == ["thinking", "text"]
    thinking, text = message.content
    assert isinstance(thinking, anthropic.types.ThinkingBlock)
    assert thinking.thinking and thinking.signature
    assert "invoice" in text.text
    assert message.usage.output_tokens == count_tokens(thinking.thinking) + count_tokens(text.text)
    assert [b.type for b in plain.content] == ["text"]


async def test_anthropic_responder_json(anthropic_api: FakeAnthropic) -> None:
    def respond(request: dict) -> str:
        assert request["system"] == "Reply with JSON."
        return json.dumps({"title": "Invoice 42", "language": "en"})

    anthropic_api.responder = respond
    async with claude(anthropic_api) as client:
        message = await client.messages.create(
            model=MODEL, max_tokens=200, system="Reply with JSON.", messages=ask("metadata?")
        )
    assert json.loads(message.content[0].text) == {"title": "Invoice 42", "language": "en"}


async def test_anthropic_responder_tool_use_and_error(anthropic_api: FakeAnthropic) -> None:
    anthropic_api.responder = lambda request: [
        {"type": "tool_use", "name": "record_metadata", "input": {"title": "T"}}
    ]
    async with claude(anthropic_api) as client:
        message = await client.messages.create(model=MODEL, max_tokens=200, messages=ask("x"))
        assert message.stop_reason == "tool_use"
        assert message.content[0].input == {"title": "T"} and message.content[0].id

        def refuse(request: dict) -> str:
            raise ResponderError("prompt is too long", status=400)

        anthropic_api.responder = refuse
        with pytest.raises(anthropic.BadRequestError) as caught:
            await client.messages.create(model=MODEL, max_tokens=200, messages=ask("x"))
    assert caught.value.type == "invalid_request_error"


async def test_anthropic_max_tokens_and_stop_sequences(anthropic_api: FakeAnthropic) -> None:
    anthropic_api.responder = lambda request: "alpha beta gamma END delta epsilon"
    async with claude(anthropic_api) as client:
        cut = await client.messages.create(model=MODEL, max_tokens=2, messages=ask("x"))
        stopped = await client.messages.create(
            model=MODEL, max_tokens=100, stop_sequences=["END"], messages=ask("x")
        )
    assert (cut.content[0].text, cut.stop_reason, cut.usage.output_tokens) == (
        "alpha beta",
        "max_tokens",
        2,
    )
    assert stopped.content[0].text == "alpha beta gamma "
    assert (stopped.stop_reason, stopped.stop_sequence) == ("stop_sequence", "END")


async def test_anthropic_streaming(anthropic_api: FakeAnthropic) -> None:
    async with claude(anthropic_api) as client:
        async with client.messages.stream(
            model=MODEL,
            max_tokens=2048,
            thinking={"type": "enabled", "budget_tokens": 1024},
            messages=ask("Stream about Temporal"),
        ) as stream:
            text = "".join([chunk async for chunk in stream.text_stream])
            final = await stream.get_final_message()
    assert [b.type for b in final.content] == ["thinking", "text"]
    assert text == final.content[1].text and "temporal" in text
    assert final.usage.output_tokens > 0 and final.stop_reason == "end_turn"


async def test_anthropic_count_tokens(anthropic_api: FakeAnthropic) -> None:
    async with claude(anthropic_api) as client:
        counted = await client.messages.count_tokens(
            model=MODEL, system="Be brief.", messages=ask("How many tokens?")
        )
    assert counted.input_tokens == count_tokens("Be brief.") + count_tokens("How many tokens?")


async def test_anthropic_message_batches(anthropic_api: FakeAnthropic) -> None:
    anthropic_api.batch_polls_before_end = 1
    requests = [
        {
            "custom_id": "chunk-1",
            "params": {"model": MODEL, "max_tokens": 50, "messages": ask("About embeddings")},
        },
        {"custom_id": "chunk-2", "params": {"model": MODEL, "messages": ask("no max_tokens")}},
    ]
    async with claude(anthropic_api) as client:
        batch = await client.messages.batches.create(requests=requests)
        assert batch.processing_status == "in_progress"
        assert batch.request_counts.processing == 2 and batch.results_url is None
        polled = await client.messages.batches.retrieve(batch.id)
        assert polled.processing_status == "in_progress"
        ended = await client.messages.batches.retrieve(batch.id)
        assert ended.processing_status == "ended" and ended.results_url
        assert (ended.request_counts.succeeded, ended.request_counts.errored) == (1, 1)
        results = {
            r.custom_id: r.result async for r in await client.messages.batches.results(batch.id)
        }
    assert results["chunk-1"].type == "succeeded"
    assert "embeddings" in results["chunk-1"].message.content[0].text
    assert results["chunk-1"].message.usage.service_tier == "batch"
    assert results["chunk-2"].type == "errored"
    assert results["chunk-2"].error.error.type == "invalid_request_error"


async def test_anthropic_batch_cancel(anthropic_api: FakeAnthropic) -> None:
    anthropic_api.batch_polls_before_end = 5
    request = {"custom_id": "a", "params": {"model": MODEL, "max_tokens": 5, "messages": ask("x")}}
    async with claude(anthropic_api) as client:
        batch = await client.messages.batches.create(requests=[request])
        canceling = await client.messages.batches.cancel(batch.id)
        assert canceling.processing_status == "canceling"
        ended = await client.messages.batches.retrieve(batch.id)
        assert ended.processing_status == "ended" and ended.request_counts.canceled == 1
        listed = [b.id async for b in client.messages.batches.list()]
        assert listed == [batch.id]


async def test_latency_makes_clients_time_out(
    voyage_api: FakeVoyage, anthropic_api: FakeAnthropic
) -> None:
    voyage_api.latency_s = anthropic_api.latency_s = 0.5
    slow_voyage = voyageai.AsyncClient(
        api_key=VOYAGE_KEY, base_url=voyage_api.base_url, timeout=0.1
    )
    with pytest.raises(voyageai.error.Timeout):
        await slow_voyage.embed(["x"], model="voyage-3.5")
    async with claude(anthropic_api).with_options(timeout=0.1) as client:
        with pytest.raises(anthropic.APITimeoutError):
            await client.messages.create(model=MODEL, max_tokens=10, messages=ask("hi"))


async def test_concurrent_requests(voyage_api: FakeVoyage, anthropic_api: FakeAnthropic) -> None:
    client = voyage_client(voyage_api)
    results = await asyncio.gather(
        *(client.embed([f"text {i}"], model="voyage-3.5") for i in range(40))
    )
    assert all(len(r.embeddings) == 1 for r in results) and voyage_api.request_count == 40
    async with claude(anthropic_api) as claude_client:
        messages = await asyncio.gather(
            *(
                claude_client.messages.create(model=MODEL, max_tokens=20, messages=ask(f"q{i}"))
                for i in range(40)
            )
        )
    assert len({m.id for m in messages}) == 40


async def test_fakes_are_independent_and_fast_to_start() -> None:
    started = time.monotonic()
    with FakeVoyage() as one, FakeVoyage() as two:
        assert one.port != two.port
        one.fail_next(1, 500)
        await voyage_client(two).embed(["x"], model="voyage-3.5")
        assert (one.request_count, two.request_count, one.pending_faults) == (0, 1, 1)
    assert time.monotonic() - started < 5
