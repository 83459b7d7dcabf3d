"""What an ingestion call answers: counts, the versions that hold the rows, and why rows were rejected.

:class:`IngestResult` is also the REST response schema of ``POST /v1/datasets/{name}/events``.
"""

from __future__ import annotations

from pydantic import BaseModel, Field

__all__ = ["MAX_REASON_SAMPLES", "IngestResult", "RejectedRow"]

MAX_REASON_SAMPLES = 20


class RejectedRow(BaseModel):
    """One rejected row: its 0-based position in the input and why it was refused."""

    row: int = Field(description="0-based position of the row in the input (for NDJSON: among non-blank lines).")
    reason: str

    def __str__(self) -> str:
        return f"row {self.row}: {self.reason}"


class IngestResult(BaseModel):
    """The outcome of one ingestion batch, returned only after its rows are durably committed."""

    dataset: str
    batch_id: str = Field(description="The idempotency key (given by the caller, or generated).")
    accepted: int = Field(description="Rows appended to the dataset.")
    rejected: int = Field(description="Rows written to the dead-letter dataset NAME__rejected.")
    version: int | None = Field(
        default=None,
        description="The Delta version holding the accepted rows (None when none were accepted).",
    )
    rejected_version: int | None = Field(
        default=None, description="The version of NAME__rejected holding the rejected rows, if any."
    )
    duplicate: bool = Field(
        default=False,
        description="True when this batch id was ingested before: nothing was written, the counts are the "
        "original ones.",
    )
    reasons: list[RejectedRow] = Field(
        default_factory=list, description=f"Up to {MAX_REASON_SAMPLES} examples of rejected rows and why."
    )
