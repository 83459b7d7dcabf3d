"""The quality service: reports stored and read back, the pass/fail verdict, versions, ownership."""

from __future__ import annotations

from typing import Any

import pytest
from tests.fixtures.quality import QualityLake, events

import recplane.quality
from recplane.auth import ADMIN, Principal
from recplane.errors import Forbidden, InvalidInput, InvalidSpec, NotFound, QualityGateFailed
from recplane.quality import QualityReport

RULES: list[dict[str, Any]] = [
    {"rule": "not_null", "columns": ["user_id"]},
    {"rule": "range", "column": "rating", "min": 1, "max": 5, "severity": "warning"},
]
OTHER_TEAM = Principal(team="ads")


def test_public_face_of_the_quality_package() -> None:
    assert sorted(recplane.quality.__all__) == [
        "QualityReport",
        "QualityService",
        "QualitySummary",
        "Rule",
        "RuleResult",
        "ks_statistic",
        "parse_rules",
        "psi",
    ]


def test_a_dataset_without_rules_gets_a_passed_report_that_says_so(lake: QualityLake) -> None:
    name = lake.create([])
    lake.append(name, events(3))
    report = lake.check(name)
    assert report.passed and report.results == [] and report.summary.rules == 0
    assert "declares no quality rules" in report.message
    assert report.id is not None


def test_check_stores_the_report_and_it_reads_back_identically(lake: QualityLake) -> None:
    name = lake.create(RULES)
    lake.append(name, events(10))
    report = lake.check(name)
    assert report.dataset == name and report.version == 1
    assert lake.quality.report(name, report.id or 0, principal=ADMIN) == report
    assert lake.quality.reports(name, principal=ADMIN) == [report]


def test_reports_come_newest_first_and_respect_the_limit(lake: QualityLake) -> None:
    name = lake.create(RULES)
    lake.append(name, events(10))
    first = lake.check(name, version=0)
    lake.append(name, events(5, start=10, user_id=[None] * 5))
    second = lake.check(name)
    assert [r.id for r in lake.quality.reports(name, principal=ADMIN)] == [second.id, first.id]
    assert [r.version for r in lake.quality.reports(name, principal=ADMIN, limit=1)] == [2]
    with pytest.raises(InvalidInput, match="limit must be between 1 and 1000"):
        lake.quality.reports(name, principal=ADMIN, limit=0)


def test_only_a_failed_blocking_rule_fails_the_report(lake: QualityLake) -> None:
    name = lake.create(RULES)
    lake.append(name, events(10, rating=[9.0] * 10))
    warned = lake.check(name)
    assert warned.passed
    assert warned.summary.model_dump() == {
        "rules": 2,
        "passed": 1,
        "failed": 1,
        "blocking_failed": 0,
        "warnings_failed": 1,
    }
    assert warned.message == "All blocking rules passed on version 1; 1 warning(s): range(rating)."
    warned.raise_for_failure()

    lake.append(name, events(2, start=10, user_id=[None, None]))
    failed = lake.check(name)
    assert not failed.passed and failed.summary.blocking_failed == 1
    assert (
        failed.message == "2 of 2 rules failed on version 2 (1 blocking): not_null(user_id), range(rating)."
    )
    assert [r.name for r in failed.failures] == ["not_null(user_id)", "range(rating)"]
    with pytest.raises(QualityGateFailed, match="2 of 12 rows"):
        failed.raise_for_failure()


def test_an_older_version_is_checked_on_its_own_rows(lake: QualityLake) -> None:
    name = lake.create(RULES)
    lake.append(name, events(10))
    lake.append(name, events(2, start=10, user_id=[None, None]))
    assert lake.check(name, version=1).passed
    assert not lake.check(name, version=2).passed
    assert lake.quality.reports(name, principal=ADMIN)[1].version == 1


def test_unknown_versions_are_refused(lake: QualityLake) -> None:
    name = lake.create(RULES)
    with pytest.raises(NotFound, match=r"has no version 4 \(version\); its versions are 0..0"):
        lake.check(name, version=4)
    with pytest.raises(NotFound, match=r"no version 9 \(reference_version\)"):
        lake.check(name, reference_version=9)
    with pytest.raises(NotFound, match="No dataset named 'nope'"):
        lake.check("nope")


def test_a_report_of_another_dataset_is_not_found_under_this_one(lake: QualityLake) -> None:
    first = lake.create(RULES, name="first")
    second = lake.create(RULES, name="second")
    report = lake.check(first)
    with pytest.raises(NotFound, match="Dataset 'second' has no quality report"):
        lake.quality.report(second, report.id or 0, principal=ADMIN)


def test_another_team_can_neither_check_nor_read_reports(lake: QualityLake) -> None:
    name = lake.create(RULES)
    report = lake.check(name)
    with pytest.raises(Forbidden):
        lake.quality.check(name, principal=OTHER_TEAM)
    with pytest.raises(Forbidden):
        lake.quality.reports(name, principal=OTHER_TEAM)
    with pytest.raises(Forbidden):
        lake.quality.report(name, report.id or 0, principal=OTHER_TEAM)
    assert lake.quality.check(name, principal=Principal(team="recsys")).passed


def test_registering_a_dataset_with_an_invalid_rule_is_refused(lake: QualityLake) -> None:
    with pytest.raises(InvalidSpec, match=r"quality\[0\] \(range\): column 'event_type' has type string"):
        lake.create([{"rule": "range", "column": "event_type", "min": 0}])


def test_the_report_schema_round_trips_through_json(lake: QualityLake) -> None:
    name = lake.create([*RULES, {"rule": "unique", "columns": ["user_id", "ts"]}])
    lake.append(name, events(4))
    lake.append(name, events(4))
    report = lake.check(name)
    assert QualityReport.model_validate_json(report.model_dump_json()) == report
