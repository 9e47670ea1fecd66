"""Answering an aggregate query in three steps that the route keeps apart:

``prepare`` (no data touched: parse, authorise, validate, price, check the budget), ``execute`` (the only
step that reads the source: run the compiled statement and add noise) and ``record`` (spend the budget in
the transaction that will also hold the audit event). A query refused in ``prepare`` spends nothing.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from anonymization import InvalidPrivacyParameter
from gateway.catalog import Catalog, DatasetSpec
from gateway.exceptions import InvalidQuery, QueryNotSupported, UnknownDataset
from gateway.query.compile import CompiledQuery, compile_statistics
from gateway.query.plan import QueryPlan
from gateway.query.release import (
    AggregateMechanisms,
    build_mechanisms,
    epsilons_for_accuracy,
    even_split,
    release_aggregate,
)
from gateway.query.sql_frontend import parse_sql
from gateway.query.statistics import plan_statistics
from gateway.query.validate import validate_plan
from gateway.sources import Sources
from policies import budget as budget_service
from policies import service as policy_service
from policies.enforcer import PolicyEngine
from policies.models import Grant

ACTION = "aggregate"
# Below this the answer is pure noise; a smaller epsilon is a mistake, not a wish for more privacy.
MIN_QUERY_EPSILON = 1e-6
CONFIDENCE = 0.95


@dataclass(frozen=True, slots=True)
class QueryLimits:
    default_epsilon: float
    max_epsilon: float
    max_groups: int


@dataclass(frozen=True, slots=True)
class AccuracyTarget:
    """Every released COUNT and SUM within ``half_width`` of the exact value with ``confidence``."""

    half_width: float
    confidence: float = 0.95


@dataclass(frozen=True, slots=True)
class PreparedQuery:
    plan: QueryPlan
    dataset: DatasetSpec
    grant: Grant
    compiled: CompiledQuery
    mechanisms: tuple[AggregateMechanisms, ...]
    """One per aggregate, in plan order; built (and so priced) before the data is read."""
    group_keys: tuple[tuple[str, ...], ...]
    """Every released group: the product of the grouping columns' public keys."""

    confidence: float = CONFIDENCE

    @property
    def epsilon(self) -> float:
        return math.fsum(mechanism.epsilon for mechanism in self.mechanisms)


@dataclass(frozen=True, slots=True)
class QueryAnswer:
    columns: list[str]
    rows: list[list[Any]]
    reports: dict[str, dict[str, Any]]
    """Per aggregate: mechanism, scale, epsilon and accuracy (per-row accuracies follow ``rows``)."""


def plan_query(sql: str, catalog: Catalog) -> tuple[QueryPlan, DatasetSpec]:
    return resolve_dataset(parse_sql(sql), catalog)


def resolve_dataset(plan: QueryPlan, catalog: Catalog) -> tuple[QueryPlan, DatasetSpec]:
    dataset = catalog.dataset(plan.dataset)
    if dataset is None or ACTION not in dataset.actions:
        raise UnknownDataset(f"there is no dataset {plan.dataset!r} that can be aggregated")
    return plan, dataset


def prepare(
    session: Session,
    engine: PolicyEngine,
    principal: policy_service.AuthenticatedPrincipal,
    *,
    plan: QueryPlan,
    dataset: DatasetSpec,
    purpose: str,
    epsilon: float | None,
    limits: QueryLimits,
    now: datetime,
    accuracy: AccuracyTarget | None = None,
    check_budget: bool = True,
    sources: Sources | None = None,
) -> PreparedQuery:
    # Authorise before checking column names, so a caller without a grant cannot probe the schema.
    grant = policy_service.authorize(
        session, engine, principal, dataset=plan.dataset, action=ACTION, purpose=purpose, now=now
    )
    validate_plan(plan, dataset)
    prepared = build_release(
        plan,
        dataset,
        grant,
        epsilon=epsilon,
        accuracy=accuracy,
        limits=limits,
        # Asked only now, after authorisation: an unauthorised caller learns nothing, not even timing.
        bound_contributions=sources is None or sources.needs_bounding(plan.dataset, dataset),
    )
    if check_budget:
        budget_service.check_affordable(
            session, grant, principal.id, plan.dataset, prepared.epsilon, now, dataset_cap(dataset)
        )
    return prepared


def build_release(
    plan: QueryPlan,
    dataset: DatasetSpec,
    grant: Grant,
    *,
    epsilon: float | None,
    limits: QueryLimits,
    accuracy: AccuracyTarget | None = None,
    bound_contributions: bool = True,
) -> PreparedQuery:
    """Everything a validated plan needs before the data is read: statistics, mechanisms (and so the
    price), and the compiled statement. Touches neither the state database nor the source."""
    aggregate_plans = plan_statistics(plan, dataset)
    group_keys = tuple(itertools.product(*(dataset.columns[name].keys or () for name in plan.group_by)))
    if len(group_keys) > limits.max_groups:
        raise QueryNotSupported(
            f"the query would release {len(group_keys)} groups; at most {limits.max_groups} are allowed"
        )
    confidence = accuracy.confidence if accuracy is not None else CONFIDENCE
    try:
        if accuracy is not None:
            shares = epsilons_for_accuracy(
                aggregate_plans,
                half_width=accuracy.half_width,
                confidence=confidence,
                max_contributions=dataset.max_contributions,
            )
        else:
            shares = even_split(aggregate_plans, limits.default_epsilon if epsilon is None else epsilon)
        total = math.fsum(shares)
        if not (math.isfinite(total) and MIN_QUERY_EPSILON <= total <= limits.max_epsilon):
            wanted = "this accuracy would need" if accuracy is not None else "the query asks for"
            raise InvalidQuery(
                f"{wanted} epsilon {total:g}; a query may spend between {MIN_QUERY_EPSILON:g} "
                f"and {limits.max_epsilon:g}"
            )
        mechanisms = build_mechanisms(
            aggregate_plans, epsilons=shares, max_contributions=dataset.max_contributions, confidence=confidence
        )
    except InvalidPrivacyParameter as exc:
        raise InvalidQuery(exc.message) from exc
    return PreparedQuery(
        plan=plan,
        dataset=dataset,
        grant=grant,
        compiled=compile_statistics(plan, dataset, aggregate_plans, bound_contributions=bound_contributions),
        mechanisms=mechanisms,
        group_keys=group_keys,
        confidence=confidence,
    )


def dataset_cap(dataset: DatasetSpec) -> budget_service.Allowance:
    return budget_service.Allowance(dataset.global_budget.epsilon_per_period, dataset.global_budget.period)


def _exact_statistics(
    prepared: PreparedQuery, rows: list[tuple[Any, ...]]
) -> tuple[dict[tuple[object, ...], list[int]], list[list[int]] | None]:
    """Per statistic, its exact value for every released group (absent groups are zero); and for a
    quantile, every group's histogram over the candidate grid."""
    compiled = prepared.compiled
    width = compiled.group_width
    position = {key: index for index, key in enumerate(prepared.group_keys)}
    totals = {statistic.key: [0] * len(prepared.group_keys) for statistic in compiled.statistics}
    grid = compiled.grid
    histograms = [[0] * grid.count for _ in prepared.group_keys] if grid is not None else None
    keys = [statistic.key for statistic in compiled.statistics]
    histogram_index = keys.index(("count", grid.column, None)) if grid is not None else -1
    offset = width + (1 if grid is not None else 0)
    for row in rows:
        group = position.get(tuple(row[:width]))
        if group is None:  # pragma: no cover - the statement only returns public keys
            continue
        for statistic, value in zip(compiled.statistics, row[offset:], strict=True):
            totals[statistic.key][group] += int(value or 0)
        if histograms is not None and grid is not None and row[width] is not None:
            bucket = min(max(int(row[width]), 0), grid.count - 1)
            histograms[group][bucket] += int(row[offset + histogram_index] or 0)
    return totals, histograms


def execute(prepared: PreparedQuery, sources: Sources) -> QueryAnswer:
    """Run the pushed-down statement and release every aggregate through its mechanisms.

    Groups with no rows come back from the source as absent and are released from noisy zeros, so the
    presence of a group in the answer says nothing about the data.
    """
    plan = prepared.plan
    exact, histograms = _exact_statistics(
        prepared, sources.fetch_all(plan.dataset, prepared.dataset, prepared.compiled.sql)
    )
    released = [release_aggregate(mechanism, exact, histograms) for mechanism in prepared.mechanisms]
    rows: list[list[Any]] = []
    for index, key in enumerate(prepared.group_keys):
        by_name: dict[str, Any] = dict(zip(plan.group_by, key, strict=True))
        by_name.update({a.name: released[i].values[index] for i, a in enumerate(plan.aggregates)})
        rows.append([by_name[output.name] for output in plan.outputs])
    reports = {aggregate.name: released[i].report for i, aggregate in enumerate(plan.aggregates)}

    columns = [output.name for output in plan.outputs]
    # ORDER BY and LIMIT act on released values only: post-processing, no extra privacy cost. Per-row
    # accuracies are reordered with their rows.
    order = list(range(len(rows)))
    for name, descending in reversed(plan.order_by):
        position = columns.index(name)
        order.sort(key=lambda row_index: rows[row_index][position], reverse=descending)
    if plan.limit is not None:
        order = order[: plan.limit]
    for report in reports.values():
        if isinstance(report.get("half_width"), list):
            report["half_width"] = [report["half_width"][row_index] for row_index in order]
    return QueryAnswer(columns=columns, rows=[rows[row_index] for row_index in order], reports=reports)


def record(
    session: Session,
    prepared: PreparedQuery,
    principal: policy_service.AuthenticatedPrincipal,
    *,
    request_id: str,
    now: datetime,
    data_was_read: bool = False,
) -> float:
    """Spend the query's epsilon in the caller's transaction; return what is left this period.

    ``data_was_read`` marks a query that failed after the source was read: it is charged all the same
    (see ``policies.budget.spend``)."""
    return budget_service.spend(
        session,
        prepared.grant,
        principal_id=principal.id,
        dataset=prepared.plan.dataset,
        epsilon=prepared.epsilon,
        request_id=request_id,
        now=now,
        cap=dataset_cap(prepared.dataset),
        data_was_read=data_was_read,
    )


def mechanism_report(prepared: PreparedQuery) -> dict[str, dict[str, Any]]:
    """Mechanism, scale, epsilon and data-independent accuracy of each aggregate, known before any data
    is read (for ``/v1/query/estimate``)."""
    reports: dict[str, dict[str, Any]] = {}
    for built in prepared.mechanisms:
        name = built.plan.aggregate.name
        if built.quantile is not None:
            reports[name] = {
                "mechanism": built.quantile.name,
                "scale": built.quantile.scale,
                "epsilon": built.quantile.epsilon,
                "rank_half_width": built.quantile.rank_half_width,
            }
            continue
        first = built.statistics[0]
        report: dict[str, Any] = {
            "mechanism": first.name,
            "epsilon": built.epsilon,
            "scale": [m.scale for m in built.statistics] if len(built.statistics) > 1 else first.scale,
        }
        if built.plan.aggregate.function in ("count", "sum"):
            fixed = built.plan.statistics[0].fixed_point
            report["half_width"] = first.half_width / (fixed.scale if fixed is not None else 1)
        else:
            report["half_width"] = None
            report["note"] = "the half-width of this aggregate depends on the group's size; it comes with the answer"
        reports[name] = report
    return reports


def privacy_report(prepared: PreparedQuery, answer: QueryAnswer, remaining: float, now: datetime) -> dict[str, Any]:
    grant = prepared.grant
    period = budget_service.period_of(grant.budget_period, now) if grant.budget_period else None
    return {
        "definition": "pure epsilon-differential privacy, adding or removing one privacy unit",
        "privacy_unit": prepared.dataset.privacy_unit,
        "max_contributions": prepared.dataset.max_contributions,
        "epsilon_spent": prepared.epsilon,
        "confidence": prepared.confidence,
        "aggregates": answer.reports,
        "budget": {
            "period": period,
            "epsilon_per_period": grant.epsilon_per_period,
            "epsilon_remaining": remaining,
        },
        "legal_basis": grant.legal_basis,
    }
