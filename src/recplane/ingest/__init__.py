"""Real-time ingestion: inputs validated against a dataset's spec, group-committed, once per batch id."""

from recplane.ingest.ledger import BatchLedger, CommitOutcome
from recplane.ingest.result import IngestResult, RejectedRow
from recplane.ingest.service import DatasetAccess, IngestService
from recplane.ingest.sources import iter_record_batches, parse_body, read_input
from recplane.ingest.stream import StreamStats, consume_stream, consume_stream_async, stream_app_id
from recplane.ingest.validation import DEAD_LETTER_SCHEMA, Validated, Validator, dead_letters
from recplane.ingest.writer import TableWriter

__all__ = [
    "DEAD_LETTER_SCHEMA",
    "BatchLedger",
    "CommitOutcome",
    "DatasetAccess",
    "IngestResult",
    "IngestService",
    "RejectedRow",
    "StreamStats",
    "TableWriter",
    "Validated",
    "Validator",
    "consume_stream",
    "consume_stream_async",
    "dead_letters",
    "iter_record_batches",
    "parse_body",
    "read_input",
    "stream_app_id",
]
