"""Data quality: declarative rules per dataset, drift measures, and stored reports that gate pipelines."""

from recplane.quality.checks import RuleResult
from recplane.quality.drift import ks_statistic, psi
from recplane.quality.rules import Rule, parse_rules
from recplane.quality.service import QualityReport, QualityService, QualitySummary

__all__ = [
    "QualityReport",
    "QualityService",
    "QualitySummary",
    "Rule",
    "RuleResult",
    "ks_statistic",
    "parse_rules",
    "psi",
]
