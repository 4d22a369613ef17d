"""Names of activities, signals and queries shared by workflows, activities and the API."""

FETCH_RUN_DOCUMENTS = "fetch_run_documents"
SET_RUN_STATUS = "set_run_status"
RECORD_DOCUMENT_OUTCOME = "record_document_outcome"

INSPECT_DOCUMENT = "inspect_document"
PARSE_DOCUMENT = "parse_document"
PARSE_PAGE_RANGE = "parse_page_range"
MERGE_PARSED_PARTS = "merge_parsed_parts"
EXTRACT_METADATA = "extract_metadata"
ENRICH_DOCUMENT = "enrich_document"
CHUNK_DOCUMENT = "chunk_document"
CONTEXTUALIZE_CHUNKS = "contextualize_chunks"
EMBED_CHUNKS = "embed_chunks"
STORE_DOCUMENT = "store_document"

DOCUMENT_PROGRESS_SIGNAL = "document_progress"
STATUS_QUERY = "status"
