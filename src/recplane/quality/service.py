"""The quality service: run a dataset's declared rules on a version, store the report, read reports back.

A check evaluates every rule of the dataset's current spec on one Delta version (the newest by default) and
stores the outcome as a :class:`QualityReport` in the catalog. A report passes unless a ``blocking`` rule
failed; ``warning`` rules are reported but never fail it. Pipelines and the CLI gate on ``passed`` (or call
:meth:`QualityReport.raise_for_failure`).
"""

from __future__ import annotations

from datetime import UTC, datetime

import pyarrow as pa
import pyarrow.dataset as pads
from pydantic import BaseModel, Field
from sqlalchemy import select

from recplane.auth import Principal
from recplane.catalog import Catalog, QualityReportRecord, utcnow
from recplane.errors import InvalidInput, NotFound, QualityGateFailed
from recplane.lake.datasets import DatasetService
from recplane.lake.table import DeltaDataset
from recplane.quality.checks import ReadVersion, RuleResult, commits_from_history, evaluate
from recplane.quality.rules import RowCountAnomalyRule, Rule, parse_rules

__all__ = ["QualityReport", "QualityService", "QualitySummary"]

MAX_REPORTS = 1000


class QualitySummary(BaseModel):
    """Counts of a report's rule results."""

    rules: int = 0
    passed: int = 0
    failed: int = 0
    blocking_failed: int = 0
    warnings_failed: int = 0


class QualityReport(BaseModel):
    """The outcome of checking one dataset version against its quality rules."""

    id: int | None = Field(default=None, description="The stored report's id (None before it is stored).")
    dataset: str
    version: int = Field(description="The Delta version that was checked.")
    reference_version: int | None = Field(
        default=None, description="The drift reference given to the check, if any."
    )
    passed: bool = Field(description="False if and only if a blocking rule failed.")
    created_at: datetime
    message: str = Field(description="A one-line verdict.")
    summary: QualitySummary
    results: list[RuleResult] = Field(default_factory=list)

    @property
    def failures(self) -> list[RuleResult]:
        """The results of the rules that failed (blocking and warning)."""
        return [result for result in self.results if not result.passed]

    def raise_for_failure(self) -> None:
        """Raise QualityGateFailed if a blocking rule failed."""
        if not self.passed:
            blocking = [r for r in self.results if not r.passed and r.severity == "blocking"]
            raise QualityGateFailed(
                f"Dataset {self.dataset!r} version {self.version} failed quality: "
                + "; ".join(f"{r.name}: {r.message}" for r in blocking),
                details={"dataset": self.dataset, "version": self.version, "report_id": self.id},
            )


class QualityService:
    """Check datasets against their declared quality rules and keep the reports in the catalog."""

    def __init__(self, catalog: Catalog, datasets: DatasetService) -> None:
        self._catalog = catalog
        self._datasets = datasets

    def check(
        self,
        name: str,
        *,
        principal: Principal,
        version: int | None = None,
        reference_version: int | None = None,
        now: datetime | None = None,
    ) -> QualityReport:
        """Evaluate the dataset's rules at ``version`` (default: newest), store the report and return it."""
        opened = self._datasets.open(name, principal=principal)
        rules = parse_rules(opened.spec.quality, opened.spec)
        table = opened.table
        newest = table.version()
        checked = newest if version is None else version
        _require_version(name, checked, newest, "version")
        if reference_version is not None:
            _require_version(name, reference_version, newest, "reference_version")
        needs_history = any(isinstance(rule, RowCountAnomalyRule) for rule in rules)
        try:
            results = evaluate(
                rules,
                spec=opened.spec,
                version=checked,
                read=_reader(table),
                commits=commits_from_history(table.history()) if needs_history else (),
                reference_version=reference_version,
                now=now,
            )
        except FileNotFoundError as exc:
            raise NotFound(
                f"Version {checked} of dataset {name!r} can no longer be read: retention vacuumed its files. "
                "Check a newer version."
            ) from exc
        report = build_report(name, checked, rules, results, reference_version=reference_version)
        return self._store(report)

    def reports(self, name: str, *, principal: Principal, limit: int = 20) -> list[QualityReport]:
        """Stored reports of a dataset, newest first."""
        if not 1 <= limit <= MAX_REPORTS:
            raise InvalidInput(f"limit must be between 1 and {MAX_REPORTS}, not {limit}.")
        self._datasets.open(name, principal=principal)
        query = (
            select(QualityReportRecord)
            .where(QualityReportRecord.dataset == name)
            .order_by(QualityReportRecord.id.desc())
            .limit(limit)
        )
        with self._catalog.session() as session:
            records = list(session.scalars(query))
        return [_from_record(record) for record in records]

    def report(self, name: str, report_id: int, *, principal: Principal) -> QualityReport:
        """One stored report of a dataset, by id."""
        self._datasets.open(name, principal=principal)
        with self._catalog.session() as session:
            record = session.get(QualityReportRecord, report_id)
        if record is None or record.dataset != name:
            raise NotFound(
                f"Dataset {name!r} has no quality report {report_id}. List its reports to see the valid ids."
            )
        return _from_record(record)

    def _store(self, report: QualityReport) -> QualityReport:
        record = QualityReportRecord(
            dataset=report.dataset,
            delta_version=report.version,
            passed=report.passed,
            report=report.model_dump(mode="json", exclude={"id"}),
            created_at=report.created_at,
        )
        with self._catalog.session() as session:
            session.add(record)
            session.flush()
            report_id = record.id
        return report.model_copy(update={"id": report_id})


def build_report(
    dataset: str,
    version: int,
    rules: list[Rule],
    results: list[RuleResult],
    *,
    reference_version: int | None = None,
    created_at: datetime | None = None,
) -> QualityReport:
    """A report from rule results: passed unless a blocking rule failed, with counts and a verdict line."""
    failed = [result for result in results if not result.passed]
    blocking = [result for result in failed if result.severity == "blocking"]
    summary = QualitySummary(
        rules=len(results),
        passed=len(results) - len(failed),
        failed=len(failed),
        blocking_failed=len(blocking),
        warnings_failed=len(failed) - len(blocking),
    )
    return QualityReport(
        dataset=dataset,
        version=version,
        reference_version=reference_version,
        passed=not blocking,
        created_at=created_at or utcnow(),
        message=_verdict(dataset, version, rules, results, failed, blocking),
        summary=summary,
        results=results,
    )


def _verdict(
    dataset: str,
    version: int,
    rules: list[Rule],
    results: list[RuleResult],
    failed: list[RuleResult],
    blocking: list[RuleResult],
) -> str:
    if not rules:
        return (
            f"Dataset {dataset!r} declares no quality rules, so there was nothing to check; "
            "add rules under `quality:` in its spec."
        )
    if not failed:
        return f"All {len(results)} quality rules passed on version {version}."
    names = ", ".join(result.name for result in failed)
    if not blocking:
        return f"All blocking rules passed on version {version}; {len(failed)} warning(s): {names}."
    counts = f"{len(failed)} of {len(results)} rules failed on version {version} ({len(blocking)} blocking)"
    return f"{counts}: {names}."


def _require_version(name: str, version: int, newest: int, what: str) -> None:
    if not 0 <= version <= newest:
        raise NotFound(f"Dataset {name!r} has no version {version} ({what}); its versions are 0..{newest}.")


def _reader(table: DeltaDataset) -> ReadVersion:
    def read(version: int) -> pads.Dataset | pa.Table:
        return table.snapshot(version).to_pyarrow_dataset()

    return read


def _from_record(record: QualityReportRecord) -> QualityReport:
    created = record.created_at if record.created_at.tzinfo else record.created_at.replace(tzinfo=UTC)
    return QualityReport.model_validate({**record.report, "id": record.id, "created_at": created})
