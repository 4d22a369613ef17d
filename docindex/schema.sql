-- Idempotent: applied at every start of the API and the workers.
CREATE EXTENSION IF NOT EXISTS vector;

CREATE TABLE IF NOT EXISTS runs (
    run_id          uuid PRIMARY KEY,
    workflow_id     text NOT NULL,
    status          text NOT NULL DEFAULT 'queued',
    document_count  integer NOT NULL,
    completed       integer NOT NULL DEFAULT 0,
    failed          integer NOT NULL DEFAULT 0,
    cancelled       integer NOT NULL DEFAULT 0,
    error           text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    finished_at     timestamptz
);

CREATE TABLE IF NOT EXISTS documents (
    document_id     uuid PRIMARY KEY,
    run_id          uuid NOT NULL REFERENCES runs (run_id) ON DELETE CASCADE,
    seq             integer NOT NULL,
    filename        text NOT NULL,
    sha256          text NOT NULL,
    size_bytes      bigint NOT NULL,
    blob_key        text NOT NULL,
    status          text NOT NULL DEFAULT 'queued',
    pages           integer,
    chunk_count     integer,
    metadata        jsonb NOT NULL DEFAULT '{}'::jsonb,
    error_type      text,
    error           text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (run_id, seq)
);
CREATE INDEX IF NOT EXISTS documents_sha256 ON documents (sha256);
-- Blob key of an upload's PDF password, if one was given (never the password itself).
ALTER TABLE documents ADD COLUMN IF NOT EXISTS password_key text;

-- The vector column has no fixed dimension so several embedding models can live side by
-- side; each (model, dimension) gets its own partial HNSW index over a cast expression.
CREATE TABLE IF NOT EXISTS chunks (
    chunk_id        uuid PRIMARY KEY,
    document_id     uuid NOT NULL REFERENCES documents (document_id) ON DELETE CASCADE,
    ordinal         integer NOT NULL,
    text            text NOT NULL,
    embed_text      text NOT NULL,
    headings        text[] NOT NULL DEFAULT '{}',
    pages           integer[] NOT NULL DEFAULT '{}',
    model           text NOT NULL,
    dimension       integer NOT NULL,
    embedding       vector NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS chunks_document ON chunks (document_id, ordinal);

-- Enrichment and cost (added after the first release; ALTERs keep old databases working).
ALTER TABLE chunks ADD COLUMN IF NOT EXISTS context text;
ALTER TABLE documents ADD COLUMN IF NOT EXISTS tokens jsonb NOT NULL DEFAULT '{}'::jsonb;
ALTER TABLE documents ADD COLUMN IF NOT EXISTS cost_usd double precision NOT NULL DEFAULT 0;
ALTER TABLE runs ADD COLUMN IF NOT EXISTS trace_id text;

-- Tenants and their API keys. Only a key's SHA-256 is stored: keys are 256-bit random
-- secrets, so a fast hash is enough and lookup is one indexed equality.
CREATE TABLE IF NOT EXISTS tenants (
    tenant_id       text PRIMARY KEY,
    created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS api_keys (
    key_id          text PRIMARY KEY,
    tenant_id       text NOT NULL REFERENCES tenants (tenant_id) ON DELETE CASCADE,
    key_hash        bytea NOT NULL UNIQUE,
    name            text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    revoked_at      timestamptz
);
-- Rows from before tenants existed belong to the 'default' tenant.
ALTER TABLE runs ADD COLUMN IF NOT EXISTS tenant_id text NOT NULL DEFAULT 'default';
ALTER TABLE documents ADD COLUMN IF NOT EXISTS tenant_id text NOT NULL DEFAULT 'default';
CREATE INDEX IF NOT EXISTS documents_tenant_sha256 ON documents (tenant_id, sha256);
CREATE INDEX IF NOT EXISTS runs_tenant_status ON runs (tenant_id, status);
-- An upload's Idempotency-Key and a fingerprint of what it carried.
ALTER TABLE runs ADD COLUMN IF NOT EXISTS idempotency_key text;
ALTER TABLE runs ADD COLUMN IF NOT EXISTS request_fingerprint text;
CREATE UNIQUE INDEX IF NOT EXISTS runs_tenant_idempotency_key
    ON runs (tenant_id, idempotency_key) WHERE idempotency_key IS NOT NULL;
-- The pipeline spec a run's documents are indexed with (docindex.spec), and its digest.
ALTER TABLE runs ADD COLUMN IF NOT EXISTS pipeline jsonb;
ALTER TABLE runs ADD COLUMN IF NOT EXISTS pipeline_digest text;

-- A run's events (GET /v1/runs/{id}/events, webhooks): appended where a document's state or
-- step changes, numbered per run by runs.event_seq. Taking the next number locks the run's
-- row until the event commits, so a run's events commit in the order of their numbers and a
-- reader that resumes after number n (Last-Event-ID) misses none. NOTIFY docindex_run_events
-- carries the run id; readers fetch from Postgres.
ALTER TABLE runs ADD COLUMN IF NOT EXISTS event_seq bigint NOT NULL DEFAULT 0;
CREATE TABLE IF NOT EXISTS run_events (
    run_id          uuid NOT NULL REFERENCES runs (run_id) ON DELETE CASCADE,
    seq             bigint NOT NULL,
    tenant_id       text NOT NULL,
    kind            text NOT NULL,
    document_id     uuid,
    data            jsonb NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (run_id, seq)
);
CREATE INDEX IF NOT EXISTS run_events_document ON run_events (document_id, seq)
    WHERE document_id IS NOT NULL;
-- Webhooks: the secret is kept to sign deliveries (HMAC needs it), shown to the tenant once.
-- A delivery is recorded with the event that causes it (same statement); the webhook's
-- workflow sends its pending deliveries in order (seq) and records each attempt here.
CREATE TABLE IF NOT EXISTS webhooks (
    webhook_id      uuid PRIMARY KEY,
    tenant_id       text NOT NULL,
    url             text NOT NULL,
    events          text[] NOT NULL,
    secret          text NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS webhooks_tenant ON webhooks (tenant_id);
CREATE TABLE IF NOT EXISTS webhook_deliveries (
    seq             bigserial PRIMARY KEY,
    delivery_id     uuid NOT NULL UNIQUE,
    webhook_id      uuid NOT NULL REFERENCES webhooks (webhook_id) ON DELETE CASCADE,
    event_type      text NOT NULL,
    run_id          uuid NOT NULL,
    event_seq       bigint NOT NULL,
    data            jsonb NOT NULL,
    status          text NOT NULL DEFAULT 'pending',
    attempts        integer NOT NULL DEFAULT 0,
    last_attempt_at timestamptz,
    last_status_code integer,
    last_error      text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    delivered_at    timestamptz
);
CREATE INDEX IF NOT EXISTS webhook_deliveries_pending ON webhook_deliveries (webhook_id, seq)
    WHERE status = 'pending';
CREATE INDEX IF NOT EXISTS webhook_deliveries_webhook ON webhook_deliveries (webhook_id, seq);

-- Keyword search (hybrid search, issue #15). Runs of Chinese, Japanese and Korean characters
-- become overlapping character bigrams ("建筑节能" → "建筑 筑节 节能"), as Lucene's CJK analyzer
-- indexes them: Chinese and Japanese put no spaces between words and Korean attaches
-- particles to them, so the parser's words are whole runs that a query's words never equal.
CREATE OR REPLACE FUNCTION docindex_cjk_bigrams(body text) RETURNS text
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    SELECT coalesce(string_agg(
               CASE WHEN length(run) = 1 THEN run
                    ELSE (SELECT string_agg(substr(run, i, 2), ' ' ORDER BY i)
                          FROM generate_series(1, length(run) - 1) AS i)
               END, ' '), '')
    FROM regexp_matches(
             body, '[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff]+', 'g'
         ) AS m (found),
         LATERAL (SELECT found[1] AS run) AS r
$$;
-- The query's text without those runs (its bigrams are matched on their own).
CREATE OR REPLACE FUNCTION docindex_without_cjk(body text) RETURNS text
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    SELECT regexp_replace(
        body, '[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff]+', ' ', 'g')
$$;
-- Any of a query's terms instead of all of them, so a chunk with some ranks rather than
-- vanishing; phrases stay phrases. A query that excludes a term ("-paint") stays as it is.
CREATE OR REPLACE FUNCTION docindex_any_term(query tsquery) RETURNS tsquery
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    SELECT CASE WHEN strpos(query::text, '!') > 0 THEN query
                ELSE replace(query::text, ' & ', ' | ')::tsquery END
$$;
-- One part of a chunk, weighted: its English words (stemmed, stop words out), its words as
-- written (`simple`: exact phrases, stop words such as "A" in "Detail A"), its CJK bigrams.
CREATE OR REPLACE FUNCTION docindex_fts_part(body text, weight "char") RETURNS tsvector
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT setweight(
        to_tsvector('english'::regconfig, coalesce(body, ''))
        || to_tsvector('simple'::regconfig, coalesce(body, ''))
        || to_tsvector('simple'::regconfig, docindex_cjk_bigrams(coalesce(body, ''))),
        weight)
$$;
-- Headings weigh most (A), then the text (B), then an enricher's context (C). The column is
-- generated, so ADD COLUMN fills it for chunks stored before it existed; changing the
-- functions above changes nothing stored until the column is made again. STORAGE MAIN keeps
-- it in the row (compressed) rather than in TOAST: ranking reads it for every matching
-- chunk, 5-9 times faster from the row (docs/decisions.md, "Hybrid search").
CREATE OR REPLACE FUNCTION docindex_chunk_fts(headings text[], body text, context text)
RETURNS tsvector LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT docindex_fts_part(array_to_string(headings, ' / '), 'A')
        || docindex_fts_part(body, 'B')
        || docindex_fts_part(context, 'C')
$$;
ALTER TABLE chunks ADD COLUMN IF NOT EXISTS fts tsvector STORAGE MAIN
    GENERATED ALWAYS AS (docindex_chunk_fts(headings, text, context)) STORED;
CREATE INDEX IF NOT EXISTS chunks_fts ON chunks USING gin (fts);

-- Index generations (issue #16): a generation is a pipeline spec applied to all of a
-- tenant's documents; search serves the tenant's active one. Chunks belong to one
-- generation; a document's membership in each (and what it cost there) is a row of
-- generation_documents. One active generation per tenant, switched in one transaction.
CREATE TABLE IF NOT EXISTS generations (
    generation_id   uuid PRIMARY KEY,
    tenant_id       text NOT NULL,
    status          text NOT NULL,
    pipeline        jsonb NOT NULL,
    pipeline_digest text NOT NULL,
    workflow_id     text,
    documents_total integer NOT NULL DEFAULT 0,
    chunk_count     bigint NOT NULL DEFAULT 0,
    error           text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    finished_at     timestamptz,
    promoted_at     timestamptz
);
CREATE UNIQUE INDEX IF NOT EXISTS generations_one_active
    ON generations (tenant_id) WHERE status = 'active';
CREATE INDEX IF NOT EXISTS generations_tenant ON generations (tenant_id, created_at);
CREATE TABLE IF NOT EXISTS generation_documents (
    generation_id   uuid NOT NULL REFERENCES generations (generation_id) ON DELETE CASCADE,
    document_id     uuid NOT NULL REFERENCES documents (document_id) ON DELETE CASCADE,
    status          text NOT NULL,
    chunk_count     integer NOT NULL DEFAULT 0,
    tokens          jsonb NOT NULL DEFAULT '{}'::jsonb,
    cost_usd        double precision NOT NULL DEFAULT 0,
    error_type      text,
    error           text,
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (generation_id, document_id)
);
CREATE INDEX IF NOT EXISTS generation_documents_document
    ON generation_documents (document_id);
ALTER TABLE chunks ADD COLUMN IF NOT EXISTS generation_id uuid;
CREATE INDEX IF NOT EXISTS chunks_generation ON chunks (generation_id, document_id);
ALTER TABLE runs ADD COLUMN IF NOT EXISTS generation_id uuid;
-- Set by the reconciler once it has seen the run's workflow exist: a run that stays queued
-- (its workers down, a backlog) is then not sent another start every pass.
ALTER TABLE runs ADD COLUMN IF NOT EXISTS workflow_seen_at timestamptz;
CREATE INDEX IF NOT EXISTS runs_resumable ON runs (created_at)
    WHERE status = 'queued' AND workflow_seen_at IS NULL;
-- A reindex that failed or was cancelled leaves the document completed with its old
-- chunks; why it did not take is kept beside it.
ALTER TABLE documents ADD COLUMN IF NOT EXISTS last_error_type text;
ALTER TABLE documents ADD COLUMN IF NOT EXISTS last_error text;
ALTER TABLE documents ADD COLUMN IF NOT EXISTS last_error_at timestamptz;
-- Chunks stored before generations existed join their tenant's first generation (made
-- active, with the spec of the tenant's newest run). The partial index makes the check
-- for such chunks free once there are none.
CREATE INDEX IF NOT EXISTS chunks_without_generation ON chunks (chunk_id)
    WHERE generation_id IS NULL;
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM chunks WHERE generation_id IS NULL) THEN
        INSERT INTO generations (generation_id, tenant_id, status, pipeline, pipeline_digest,
                                 promoted_at)
        SELECT DISTINCT ON (d.tenant_id)
               md5('docindex-first-generation:' || d.tenant_id)::uuid, d.tenant_id, 'active',
               coalesce(r.pipeline, '{}'::jsonb), coalesce(r.pipeline_digest, ''), now()
        FROM documents d JOIN runs r USING (run_id)
        WHERE NOT EXISTS (SELECT 1 FROM generations g
                          WHERE g.tenant_id = d.tenant_id AND g.status = 'active')
        ORDER BY d.tenant_id, r.created_at DESC
        ON CONFLICT DO NOTHING;
        UPDATE chunks c SET generation_id = g.generation_id
        FROM documents d, generations g
        WHERE c.generation_id IS NULL AND d.document_id = c.document_id
          AND g.tenant_id = d.tenant_id AND g.status = 'active';
        INSERT INTO generation_documents (generation_id, document_id, status, chunk_count,
                                          tokens, cost_usd)
        SELECT g.generation_id, d.document_id, 'completed', coalesce(d.chunk_count, 0),
               d.tokens, d.cost_usd
        FROM documents d JOIN generations g ON g.tenant_id = d.tenant_id AND g.status = 'active'
        WHERE d.status = 'completed'
        ON CONFLICT DO NOTHING;
    END IF;
END $$;
-- A tenant's golden queries: what a promotion can be required to pass.
CREATE TABLE IF NOT EXISTS eval_sets (
    tenant_id       text NOT NULL,
    name            text NOT NULL,
    queries         jsonb NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, name)
);
-- Sources that sync themselves (POST /v1/sources): a prefix of an object store or a folder,
-- listed on a schedule. What a listing saw lives here, not in workflow history: each
-- object's version (ETag, size, mtime), the document it became, and the listing that last
-- saw it (seen_sync), so a completed listing knows which objects are gone.
CREATE TABLE IF NOT EXISTS sources (
    source_id       uuid PRIMARY KEY,
    tenant_id       text NOT NULL,
    url             text NOT NULL,
    include         text[] NOT NULL DEFAULT '{}',
    interval_s      double precision NOT NULL,
    status          text NOT NULL DEFAULT 'active',
    workflow_id     text NOT NULL,
    sync_no         bigint NOT NULL DEFAULT 0,
    sync_started_at timestamptz,
    synced_as_of    timestamptz,
    last_error      text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS sources_tenant ON sources (tenant_id, created_at);
CREATE TABLE IF NOT EXISTS source_objects (
    source_id       uuid NOT NULL REFERENCES sources (source_id) ON DELETE CASCADE,
    key             text NOT NULL,
    etag            text,
    size_bytes      bigint NOT NULL,
    modified_at     timestamptz,
    seen_sync       bigint NOT NULL DEFAULT 0,
    state           text NOT NULL DEFAULT 'pending',
    document_id     uuid REFERENCES documents (document_id) ON DELETE SET NULL,
    error           text,
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (source_id, key)
);
CREATE INDEX IF NOT EXISTS source_objects_pending ON source_objects (source_id, key)
    WHERE state = 'pending';
CREATE INDEX IF NOT EXISTS source_objects_document ON source_objects (document_id);
-- Lists of a tenant's documents and runs, newest first, a page at a time (GET /v1/documents,
-- GET /v1/runs): each page is an index range scan from the last page's (created_at, id),
-- in the order served, so no page sorts or skips rows. With a status, the status indexes.
CREATE INDEX IF NOT EXISTS documents_tenant_created
    ON documents (tenant_id, created_at DESC, document_id DESC);
CREATE INDEX IF NOT EXISTS documents_tenant_status_created
    ON documents (tenant_id, status, created_at DESC, document_id DESC);
CREATE INDEX IF NOT EXISTS runs_tenant_created ON runs (tenant_id, created_at DESC, run_id DESC);
CREATE INDEX IF NOT EXISTS runs_tenant_status_created
    ON runs (tenant_id, status, created_at DESC, run_id DESC);
-- A generation's chunk count (search chooses exact search for small ones) follows every
-- deletion of its chunks, however it happens: a reindex replacing them, a document or run
-- deleted (by cascade), a failed build cleaned up. Stores add what they insert.
CREATE OR REPLACE FUNCTION docindex_chunks_deleted() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    UPDATE generations g SET chunk_count = greatest(g.chunk_count - d.n, 0)
    FROM (SELECT generation_id, count(*) AS n FROM gone GROUP BY generation_id) AS d
    WHERE g.generation_id = d.generation_id;
    RETURN NULL;
END $$;
CREATE OR REPLACE TRIGGER chunks_deleted AFTER DELETE ON chunks
    REFERENCING OLD TABLE AS gone FOR EACH STATEMENT EXECUTE FUNCTION docindex_chunks_deleted();
