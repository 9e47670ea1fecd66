"""Answering an aggregate query in three steps that the route keeps apart:

``prepare`` (no data touched: parse, authorise, validate, price, check the budget), ``execute`` (the only
step that reads the source: run the compiled statement and add noise) and ``record`` (spend the budget in
the transaction that will also hold the audit event). A query refused in ``prepare`` spends nothing.
"""

from __future__ import annotations

import itertools
import math
import operator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from anonymization import CountMechanism, InvalidPrivacyParameter
from gateway.catalog import Catalog, DatasetSpec
from gateway.exceptions import InvalidQuery, QueryNotSupported, UnknownDataset
from gateway.query.compile import compile_counts
from gateway.query.plan import QueryPlan
from gateway.query.sql_frontend import parse_sql
from gateway.query.validate import validate_plan
from gateway.sources import DuckDBSource
from policies import budget as budget_service
from policies import service as policy_service
from policies.enforcer import PolicyEngine
from policies.models import Grant

ACTION = "aggregate"
# Below this the answer is pure noise; a smaller epsilon is a mistake, not a wish for more privacy.
MIN_QUERY_EPSILON = 1e-6


@dataclass(frozen=True, slots=True)
class QueryLimits:
    default_epsilon: float
    max_epsilon: float
    max_groups: int


@dataclass(frozen=True, slots=True)
class PreparedQuery:
    plan: QueryPlan
    dataset: DatasetSpec
    grant: Grant
    sql: str
    mechanisms: tuple[CountMechanism, ...]
    """One per aggregate, in plan order; built before the data is read."""
    group_keys: tuple[tuple[str, ...], ...]
    """Every released group: the product of the grouping columns' public keys."""

    @property
    def epsilon(self) -> float:
        return math.fsum(mechanism.epsilon for mechanism in self.mechanisms)


@dataclass(frozen=True, slots=True)
class QueryAnswer:
    columns: list[str]
    rows: list[list[Any]]


def plan_query(sql: str, catalog: Catalog) -> tuple[QueryPlan, DatasetSpec]:
    plan = parse_sql(sql)
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
) -> PreparedQuery:
    # Authorise before checking column names, so a caller without a grant cannot probe the schema.
    grant = policy_service.authorize(
        session, engine, principal, dataset=plan.dataset, action=ACTION, purpose=purpose, now=now
    )
    validate_plan(plan, dataset)

    group_keys = tuple(itertools.product(*(dataset.columns[name].keys or () for name in plan.group_by)))
    if len(group_keys) > limits.max_groups:
        raise QueryNotSupported(
            f"the query would release {len(group_keys)} groups; at most {limits.max_groups} are allowed"
        )

    total = limits.default_epsilon if epsilon is None else epsilon
    if not (math.isfinite(total) and MIN_QUERY_EPSILON <= total <= limits.max_epsilon):
        raise InvalidQuery(f"epsilon must lie between {MIN_QUERY_EPSILON:g} and {limits.max_epsilon:g} per query")
    share = total / len(plan.aggregates)
    try:
        mechanisms = tuple(
            CountMechanism(l1_sensitivity=dataset.max_contributions, epsilon=share) for _ in plan.aggregates
        )
    except InvalidPrivacyParameter as exc:
        raise InvalidQuery(exc.message) from exc
    prepared = PreparedQuery(
        plan=plan,
        dataset=dataset,
        grant=grant,
        sql=compile_counts(plan, dataset),
        mechanisms=mechanisms,
        group_keys=group_keys,
    )
    budget_service.check_affordable(session, grant, principal.id, plan.dataset, prepared.epsilon, now)
    return prepared


def execute(prepared: PreparedQuery, source: DuckDBSource) -> QueryAnswer:
    """Run the pushed-down statement and release every aggregate through its mechanism.

    Groups with no rows come back from the source as absent and are released as noisy zeros, so the
    presence of a group in the answer says nothing about the data.
    """
    plan = prepared.plan
    width = len(plan.group_by)
    exact: dict[tuple[str, ...], tuple[int, ...]] = {
        tuple(row[:width]): tuple(int(value) for value in row[width:]) for row in source.fetch_all(prepared.sql)
    }
    zero = (0,) * len(plan.aggregates)
    per_aggregate = list(zip(*(exact.get(key, zero) for key in prepared.group_keys), strict=True))
    released = [
        mechanism.release(list(counts)).values
        for mechanism, counts in zip(prepared.mechanisms, per_aggregate, strict=True)
    ]
    rows: list[list[Any]] = []
    for index, key in enumerate(prepared.group_keys):
        by_name: dict[str, Any] = dict(zip(plan.group_by, key, strict=True))
        by_name.update({aggregate.name: released[a][index] for a, aggregate in enumerate(plan.aggregates)})
        rows.append([by_name[output.name] for output in plan.outputs])

    columns = [output.name for output in plan.outputs]
    # ORDER BY and LIMIT act on released values only: post-processing, no extra privacy cost.
    for name, descending in reversed(plan.order_by):
        rows.sort(key=operator.itemgetter(columns.index(name)), reverse=descending)
    if plan.limit is not None:
        rows = rows[: plan.limit]
    return QueryAnswer(columns=columns, rows=rows)


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
        data_was_read=data_was_read,
    )


def privacy_report(prepared: PreparedQuery, remaining: float, now: datetime) -> dict[str, Any]:
    grant = prepared.grant
    period = budget_service.period_of(grant.budget_period, now) if grant.budget_period else None
    return {
        "definition": "pure epsilon-differential privacy, adding or removing one privacy unit",
        "privacy_unit": prepared.dataset.privacy_unit,
        "max_contributions": prepared.dataset.max_contributions,
        "epsilon_spent": prepared.epsilon,
        "confidence": prepared.mechanisms[0].confidence,
        "aggregates": {
            aggregate.name: {
                "mechanism": mechanism.name,
                "scale": mechanism.scale,
                "epsilon": mechanism.epsilon,
                "half_width": mechanism.half_width,
            }
            for aggregate, mechanism in zip(prepared.plan.aggregates, prepared.mechanisms, strict=True)
        },
        "budget": {
            "period": period,
            "epsilon_per_period": grant.epsilon_per_period,
            "epsilon_remaining": remaining,
        },
        "legal_basis": grant.legal_basis,
    }
