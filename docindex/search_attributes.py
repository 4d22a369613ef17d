"""Custom search attributes: how operators find runs and documents in the Temporal UI/CLI.

    temporal workflow list --query "IndexingRunId='<run>' AND DocStatus='failed'"

Registered idempotently at API and worker start, so a fresh dev server, a test server and a
cluster all have them before any workflow uses them.
"""

from __future__ import annotations

import logging

from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest
from temporalio.client import Client
from temporalio.common import SearchAttributeKey
from temporalio.service import RPCError, RPCStatusCode

log = logging.getLogger(__name__)

INDEXING_RUN_ID = SearchAttributeKey.for_keyword("IndexingRunId")
DOCUMENT_ID = SearchAttributeKey.for_keyword("DocumentId")
TENANT_ID = SearchAttributeKey.for_keyword("TenantId")
DOC_STATUS = SearchAttributeKey.for_keyword("DocStatus")
ERROR_TYPE = SearchAttributeKey.for_keyword("ErrorType")

ALL = (INDEXING_RUN_ID, DOCUMENT_ID, TENANT_ID, DOC_STATUS, ERROR_TYPE)


async def ensure_registered(client: Client, namespace: str) -> None:
    try:
        await client.operator_service.add_search_attributes(
            AddSearchAttributesRequest(
                namespace=namespace,
                search_attributes={
                    key.name: IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD for key in ALL
                },
            )
        )
    except RPCError as err:
        if err.status == RPCStatusCode.ALREADY_EXISTS:
            return
        # A cluster may not let this client manage its namespace; the deployment's setup
        # job registers them there (docker-compose.temporal.yml).
        log.warning("could not register search attributes (%s); assuming they exist", err)
