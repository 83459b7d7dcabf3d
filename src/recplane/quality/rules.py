"""Quality rule definitions: the ``quality:`` list of a dataset spec, parsed and checked against its columns.

Each rule is a mapping with a ``rule:`` kind, an optional ``severity`` (``blocking``, the default, or
``warning``) and an optional ``name``. :func:`parse_rules` turns the raw list into typed rules and refuses
anything that could not be evaluated later — an unknown kind, a column the spec does not declare, a range on
a text column, freshness without an event-time column — naming the rule's position and the problem, so a
bad rule is caught when the dataset is registered rather than when it is first checked.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from datetime import timedelta
from typing import Annotated, Any, Literal

import pyarrow as pa
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)

from recplane.errors import InvalidSpec
from recplane.lake.spec import DatasetSpec, parse_duration

__all__ = [
    "RULE_KINDS",
    "AllowedValuesRule",
    "DriftRule",
    "FreshnessRule",
    "NotNullRule",
    "RangeRule",
    "RowCountAnomalyRule",
    "Rule",
    "Severity",
    "UniqueRule",
    "parse_rules",
]

Severity = Literal["blocking", "warning"]
AllowedValue = StrictStr | StrictInt | StrictFloat | StrictBool
DEFAULT_DRIFT_THRESHOLD = {"psi": 0.2, "ks": 0.1}


class _RuleBase(BaseModel, abc.ABC):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(default="", max_length=200)
    severity: Severity = "blocking"

    @property
    def blocking(self) -> bool:
        """Whether a failure of this rule fails the whole report."""
        return self.severity == "blocking"

    @abc.abstractmethod
    def default_name(self) -> str:
        """The name used when the spec gives none."""

    def referenced_columns(self) -> list[str]:
        """Columns the rule reads (each must be declared in the spec)."""
        return []


class NotNullRule(_RuleBase):
    """At most ``max_null_rate`` of the rows may be null (or NaN) in each of ``columns``."""

    rule: Literal["not_null"]
    columns: list[str] = Field(min_length=1)
    max_null_rate: float = Field(default=0.0, ge=0.0, le=1.0)

    def default_name(self) -> str:
        return f"not_null({', '.join(self.columns)})"

    def referenced_columns(self) -> list[str]:
        return list(self.columns)


class RangeRule(_RuleBase):
    """Non-null values of a numeric ``column`` lie within ``[min, max]`` (either bound may be left out)."""

    rule: Literal["range"]
    column: str
    min: float | None = None
    max: float | None = None

    @model_validator(mode="after")
    def _bounds(self) -> RangeRule:
        if self.min is None and self.max is None:
            raise ValueError("give at least one of min and max")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min ({self.min:g}) is greater than max ({self.max:g})")
        return self

    def default_name(self) -> str:
        return f"range({self.column})"

    def referenced_columns(self) -> list[str]:
        return [self.column]


class AllowedValuesRule(_RuleBase):
    """Non-null values of ``column`` are all among ``values``."""

    rule: Literal["allowed_values"]
    column: str
    values: list[AllowedValue] = Field(min_length=1)

    def default_name(self) -> str:
        return f"allowed_values({self.column})"

    def referenced_columns(self) -> list[str]:
        return [self.column]


class UniqueRule(_RuleBase):
    """No two rows share the same values in ``columns``."""

    rule: Literal["unique"]
    columns: list[str] = Field(min_length=1)

    def default_name(self) -> str:
        return f"unique({', '.join(self.columns)})"

    def referenced_columns(self) -> list[str]:
        return list(self.columns)


class FreshnessRule(_RuleBase):
    """The newest event time (the spec's ``event_time`` column) is at most ``max_age`` old."""

    rule: Literal["freshness"]
    max_age: str

    @field_validator("max_age")
    @classmethod
    def _duration(cls, value: str) -> str:
        try:
            parse_duration(value)
        except InvalidSpec as exc:
            raise ValueError(exc.message) from exc
        return value

    @property
    def max_age_delta(self) -> timedelta:
        """``max_age`` as a timedelta."""
        return parse_duration(self.max_age)

    def default_name(self) -> str:
        return f"freshness({self.max_age})"


class RowCountAnomalyRule(_RuleBase):
    """Rows added by the checked version are within ``z`` standard deviations of the last ``window`` appends.

    ``min_rows`` / ``max_rows`` bound the total number of rows of the version.
    """

    rule: Literal["row_count_anomaly"]
    min_rows: int | None = Field(default=None, ge=0)
    max_rows: int | None = Field(default=None, ge=0)
    z: float = Field(default=3.0, gt=0)
    window: int = Field(default=10, ge=2, le=1000)

    @model_validator(mode="after")
    def _bounds(self) -> RowCountAnomalyRule:
        if self.min_rows is not None and self.max_rows is not None and self.min_rows > self.max_rows:
            raise ValueError(f"min_rows ({self.min_rows}) is greater than max_rows ({self.max_rows})")
        return self

    def default_name(self) -> str:
        return "row_count_anomaly"


class DriftRule(_RuleBase):
    """The distribution of ``column`` has not moved more than ``threshold`` from a reference version."""

    rule: Literal["drift"]
    column: str
    method: Literal["psi", "ks"] = "psi"
    threshold: float | None = Field(default=None, gt=0)
    reference_version: int | None = Field(default=None, ge=0)
    bins: int = Field(default=10, ge=2, le=1000)

    @property
    def limit(self) -> float:
        """The threshold, or the method's default (PSI 0.2, KS 0.1)."""
        return self.threshold if self.threshold is not None else DEFAULT_DRIFT_THRESHOLD[self.method]

    def default_name(self) -> str:
        return f"drift({self.column}, {self.method})"

    def referenced_columns(self) -> list[str]:
        return [self.column]


Rule = Annotated[
    NotNullRule
    | RangeRule
    | AllowedValuesRule
    | UniqueRule
    | FreshnessRule
    | RowCountAnomalyRule
    | DriftRule,
    Field(discriminator="rule"),
]
_RULE_TYPES: dict[str, type[_RuleBase]] = {
    "not_null": NotNullRule,
    "range": RangeRule,
    "allowed_values": AllowedValuesRule,
    "unique": UniqueRule,
    "freshness": FreshnessRule,
    "row_count_anomaly": RowCountAnomalyRule,
    "drift": DriftRule,
}
RULE_KINDS: tuple[str, ...] = tuple(_RULE_TYPES)
_RULE_ADAPTER: TypeAdapter[Rule] = TypeAdapter(Rule)


def parse_rules(rules: Sequence[dict[str, Any]], spec: DatasetSpec) -> list[Rule]:
    """Typed rules from a spec's ``quality:`` list; InvalidSpec naming every rule that is wrong and why."""
    parsed: list[Rule] = []
    problems: list[str] = []
    for index, raw in enumerate(rules):
        try:
            rule = _parse_one(raw)
            _check_against_spec(rule, spec)
        except _RuleProblem as problem:
            kind = raw.get("rule") if isinstance(raw, dict) else None
            label = f"quality[{index}]" + (f" ({kind})" if isinstance(kind, str) else "")
            problems.append(f"{label}: {problem}")
            continue
        parsed.append(rule)
    problems += _name_problems(parsed) if not problems else []
    if problems:
        raise InvalidSpec(
            f"Invalid quality rule(s) in dataset {spec.name!r}: " + "; ".join(problems),
            details={"errors": problems},
        )
    return _with_names(parsed)


class _RuleProblem(Exception):
    """One rule is not valid; the message says why (without the rule's position)."""


def _parse_one(raw: Any) -> Rule:
    if not isinstance(raw, dict):
        raise _RuleProblem(f"a rule must be a mapping like {{rule: not_null, columns: [a]}}, not {raw!r}")
    kind = raw.get("rule")
    if not isinstance(kind, str) or kind not in _RULE_TYPES:
        shown = "missing" if kind is None else repr(kind)
        raise _RuleProblem(f"rule kind is {shown}; known kinds are {', '.join(RULE_KINDS)}")
    try:
        return _RULE_ADAPTER.validate_python(raw)
    except ValidationError as exc:
        fields = [name for name in _RULE_TYPES[kind].model_fields if name != "rule"]
        raise _RuleProblem("; ".join(_describe(error, fields) for error in exc.errors())) from exc


def _describe(error: Any, fields: list[str]) -> str:
    # The first location element is the union tag (the rule kind); the rest is the key inside the rule.
    location = ".".join(str(part) for part in error["loc"][1:])
    message = str(error["msg"]).removeprefix("Value error, ")
    if error["type"] == "extra_forbidden":
        return f"unknown key {location!r} (valid keys: {', '.join(fields)})"
    if error["type"] == "missing":
        return f"{location} is required"
    return f"{location}: {message}" if location else message


def _check_against_spec(rule: Rule, spec: DatasetSpec) -> None:
    unknown = [column for column in rule.referenced_columns() if column not in spec.columns]
    if unknown:
        raise _RuleProblem(f"unknown column(s) {unknown}; the dataset's columns are {list(spec.columns)}")
    if isinstance(rule, RangeRule):
        _require_numeric(spec, rule.column, "range")
    elif isinstance(rule, AllowedValuesRule):
        _check_allowed_values(spec, rule)
    elif isinstance(rule, FreshnessRule) and spec.event_time is None:
        raise _RuleProblem("freshness needs the dataset to declare an event_time column")
    elif isinstance(rule, DriftRule):
        _check_drift_column(spec, rule)


def _column_type(spec: DatasetSpec, column: str) -> pa.DataType:
    return spec.columns[column].arrow


def _is_numeric(data_type: pa.DataType) -> bool:
    return bool(pa.types.is_integer(data_type) or pa.types.is_floating(data_type))


def _require_numeric(spec: DatasetSpec, column: str, kind: str) -> None:
    if not _is_numeric(_column_type(spec, column)):
        raise _RuleProblem(
            f"column {column!r} has type {spec.columns[column].type}; {kind} needs a numeric column "
            "(int8..int64, float32, float64)"
        )


def _check_allowed_values(spec: DatasetSpec, rule: AllowedValuesRule) -> None:
    data_type = _column_type(spec, rule.column)
    type_name = spec.columns[rule.column].type
    checks = [
        (pa.types.is_string(data_type), lambda v: isinstance(v, str), "strings"),
        (pa.types.is_boolean(data_type), lambda v: isinstance(v, bool), "true/false"),
        (
            pa.types.is_integer(data_type),
            lambda v: isinstance(v, int) and not isinstance(v, bool),
            "integers",
        ),
        (
            pa.types.is_floating(data_type),
            lambda v: isinstance(v, int | float) and not isinstance(v, bool),
            "numbers",
        ),
    ]
    for applies, accepts, wanted in checks:
        if applies:
            wrong = [value for value in rule.values if not accepts(value)]
            if wrong:
                raise _RuleProblem(
                    f"column {rule.column!r} is {type_name}, so values must be {wanted}; got {wrong}"
                )
            return
    raise _RuleProblem(
        f"column {rule.column!r} has type {type_name}; allowed_values works on string, integer, float "
        "and bool columns"
    )


def _check_drift_column(spec: DatasetSpec, rule: DriftRule) -> None:
    data_type = _column_type(spec, rule.column)
    orderable = _is_numeric(data_type) or pa.types.is_timestamp(data_type) or pa.types.is_date(data_type)
    categorical = pa.types.is_string(data_type) or pa.types.is_boolean(data_type)
    type_name = spec.columns[rule.column].type
    if rule.method == "ks" and not orderable:
        raise _RuleProblem(
            f"column {rule.column!r} has type {type_name}; ks needs a numeric, date or timestamp column "
            "(use method: psi for string or bool columns)"
        )
    if not (orderable or categorical):
        raise _RuleProblem(
            f"column {rule.column!r} has type {type_name}; drift works on numeric, date, timestamp, "
            "string and bool columns"
        )


def _name_problems(rules: list[Rule]) -> list[str]:
    seen: set[str] = set()
    problems = []
    for rule in rules:
        if rule.name and rule.name in seen:
            problems.append(f"two rules are named {rule.name!r}; give each rule a distinct name")
        seen.add(rule.name)
    return problems


def _with_names(rules: list[Rule]) -> list[Rule]:
    """Fill in default names, numbering repeats: two unnamed range rules on x are range(x) and range(x)#2."""
    taken = {rule.name for rule in rules if rule.name}
    named: list[Rule] = []
    for rule in rules:
        if rule.name:
            named.append(rule)
            continue
        base = rule.default_name()
        name, counter = base, 1
        while name in taken:
            counter += 1
            name = f"{base}#{counter}"
        taken.add(name)
        named.append(rule.model_copy(update={"name": name}))
    return named
