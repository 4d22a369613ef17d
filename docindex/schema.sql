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
