"""Names of the workflows' signals, queries and updates, shared with the API and the CLI
(activities are referenced by their functions)."""

DOCUMENT_PROGRESS_SIGNAL = "document_progress"
CANCEL_DOCUMENT_SIGNAL = "cancel_document"
HANDED_BACK_SIGNAL = "documents_handed_back"
STATUS_QUERY = "status"
RETRY_UPDATE = "retry"
