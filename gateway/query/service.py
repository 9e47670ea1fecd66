"""Answering an aggregate query in three steps that the route keeps apart:

``prepare`` (no data touched: parse, authorise, validate, price), ``reserve`` (check the budget and take the
cost from it under a lock, and commit, still before any data is touched) and ``execute`` (the only
step that reads the source: run the compiled statement and add noise). The route then settles the
reservation in the transaction of the audit event. A query refused before ``reserve`` spends nothing.
"""

from __future__ import annotations

import itertools
import json
import math
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from anonymization import InvalidPrivacyParameter, KeySelection
from gateway.data.catalog import Catalog, DatasetSpec, SpaceBudget
from gateway.data.public_tables import PublicTable
from gateway.data.relations import Relation
from gateway.data.sources import Sources
from gateway.exceptions import InvalidQuery, QueryNotSupported
from gateway.query.compile import ROWS, CompiledQuery, compile_statistics
from gateway.query.expressions import Value, evaluate, holds
from gateway.query.joins import DEFAULT_MAX_JOIN_CONTRIBUTIONS, CatalogNames, ResolvedPlan, joined_relation, resolve
from gateway.query.plan import QueryPlan
from gateway.query.release import (
    AggregateMechanisms,
    build_mechanisms,
    epsilons_for_accuracy,
    even_split,
    release_aggregate,
)
from gateway.query.sql_frontend import parse_sql
from gateway.query.statistics import plan_statistics, required
from gateway.query.validate import validate_plan
from policies import budget as budget_service
from policies import service as policy_service
from policies.enforcer import PolicyEngine
from policies.exceptions import BudgetExhausted
from policies.models import Grant

ACTION = "aggregate"
# Below this the answer is pure noise; a smaller epsilon is a mistake, not a wish for more privacy.
MIN_QUERY_EPSILON = 1e-6
CONFIDENCE = 0.95
DEFINITION_PURE = "pure epsilon-differential privacy, adding or removing one privacy unit"
DEFINITION_APPROXIMATE = "(epsilon, delta)-differential privacy, adding or removing one privacy unit"


@dataclass(frozen=True, slots=True)
class QueryLimits:
    default_epsilon: float
    max_epsilon: float
    max_groups: int
    default_delta: float = 1e-9
    max_delta: float = 1e-6
    max_join_contributions: int = DEFAULT_MAX_JOIN_CONTRIBUTIONS


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
    budget: SpaceBudget
    """The dataset's unit space and its caps: what the query is charged against."""
    compiled: CompiledQuery
    mechanisms: tuple[AggregateMechanisms, ...]
    """One per aggregate, in plan order; built (and so priced) before the data is read."""
    group_keys: tuple[tuple[str, ...], ...]
    """Every released group: the product of the grouping columns' public keys. Empty when the groups
    come from partition selection (``selection``) instead."""
    selection: KeySelection | None = None
    """For a plan grouping by a column without public keys: the mechanism that selects its groups."""
    max_groups: int = 10_000
    sibling_grants: tuple[Grant, ...] = ()
    """The principal's other aggregate grants in the unit space: their allowances bind too."""
    relation: Relation | None = None
    """What the statement reads, when it is not the dataset's own source (a snapshot, a join)."""
    resolved: ResolvedPlan | None = None

    confidence: float = CONFIDENCE

    @property
    def epsilon(self) -> float:
        parts = [mechanism.epsilon for mechanism in self.mechanisms]
        if self.selection is not None:
            parts.append(self.selection.epsilon)
        return math.fsum(parts)

    @property
    def delta(self) -> float:
        return self.selection.delta if self.selection is not None else 0.0

    @property
    def charged_dataset(self) -> str:
        """The dataset the spend is booked on: the first private one (a join's share one unit space)."""
        return self.resolved.private[0] if self.resolved is not None else self.plan.dataset


@dataclass(frozen=True, slots=True)
class QueryAnswer:
    columns: list[str]
    rows: list[list[Any]]
    reports: dict[str, dict[str, Any]]
    """Per aggregate: mechanism, scale, epsilon and accuracy (per-row accuracies follow ``rows``)."""


def plan_query(sql: str, catalog: Catalog) -> tuple[QueryPlan, DatasetSpec]:
    """For tools and benchmarks: a query without public tables, resolved (see ``resolve_sql``)."""
    resolved = resolve_sql(sql, catalog)
    return resolved.plan, resolved.dataset


def resolve_sql(
    sql: str, catalog: Catalog, sources: Sources | None = None, *, max_join_contributions: int = 10
) -> ResolvedPlan:
    """Parse and resolve a SQL query: its plan and the dataset its statement reads."""
    return resolve_plan(parse_sql(sql, CatalogNames(catalog)), catalog, sources, max_join_contributions)


def resolve_plan(
    plan: QueryPlan, catalog: Catalog, sources: Sources | None = None, max_join_contributions: int = 10
) -> ResolvedPlan:
    def public_table(name: str, spec: DatasetSpec) -> PublicTable:
        if sources is None:
            raise QueryNotSupported("public tables are read through the gateway's sources")
        return sources.public.get(name, spec)

    return resolve(plan, catalog, public_table=public_table, max_join_contributions=max_join_contributions)


def resolve_dataset(plan: QueryPlan, catalog: Catalog) -> tuple[QueryPlan, DatasetSpec]:
    resolved = resolve_plan(plan, catalog)
    return resolved.plan, resolved.dataset


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
    delta: float | None = None,
    sources: Sources | None = None,
    budget: SpaceBudget,
    resolved: ResolvedPlan | None = None,
    catalog: Catalog | None = None,
) -> PreparedQuery:
    """``sources``, when given, says what the statement reads (a file's verified snapshot, or the join
    of several) and refuses, after authorisation and before anything is spent, a dataset whose source
    is not ready. A join is authorised on every dataset it reads and charged to the first private one
    (all of them share its unit space, and so its budget)."""
    charged = resolved.private[0] if resolved is not None else plan.dataset
    # Authorise before checking column names, so a caller without a grant cannot probe the schema.
    grant = policy_service.authorize(
        session, engine, principal, dataset=charged, action=ACTION, purpose=purpose, now=now
    )
    if resolved is not None:
        for other in (*resolved.private[1:], *resolved.public):
            policy_service.authorize(session, engine, principal, dataset=other, action=ACTION, purpose=purpose, now=now)
    validate_plan(plan, dataset)
    relation = None
    if sources is not None and resolved is not None and catalog is not None:
        relation = statement_relation(resolved, catalog, sources)
    elif sources is not None:
        relation = sources.relation_for(plan.dataset, dataset)
    siblings = tuple(
        other
        for _, other in policy_service.usable_grants(session, engine, principal, budget.datasets, now=now)
        if other.action == ACTION and other.epsilon_per_period is not None and other.id != grant.id
    )
    prepared = build_release(
        plan,
        dataset,
        grant,
        epsilon=epsilon,
        accuracy=accuracy,
        limits=limits,
        delta=delta,
        relation=relation,
        budget=budget,
    )
    return replace(prepared, sibling_grants=siblings, relation=relation, resolved=resolved)


def statement_relation(resolved: ResolvedPlan, catalog: Catalog, sources: Sources) -> Relation:
    """What a resolved plan's statement reads, checked before anything is spent: the join of its
    tables, or its one dataset's verified snapshot (or table) under the catalog's own entry."""
    if resolved.joined:
        return joined_relation(
            resolved,
            catalog,
            relation_for=sources.relation_for,
            public_table=sources.public.get,
            arrow_reader=sources.arrow_reader,
        )
    name = resolved.plan.dataset
    return sources.relation_for(name, catalog.datasets[name])


def build_release(
    plan: QueryPlan,
    dataset: DatasetSpec,
    grant: Grant,
    *,
    epsilon: float | None,
    limits: QueryLimits,
    accuracy: AccuracyTarget | None = None,
    delta: float | None = None,
    relation: Relation | None = None,
    budget: SpaceBudget,
) -> PreparedQuery:
    """Everything a validated plan needs before the data is read: statistics, mechanisms (and so the
    price), and the compiled statement. Touches neither the state database nor the source."""
    aggregate_plans = plan_statistics(plan, dataset)
    select_keys = any(dataset.columns[name].keys is None for name in plan.group_by)
    group_keys: tuple[tuple[str, ...], ...] = ()
    if not select_keys:
        group_keys = tuple(itertools.product(*(dataset.columns[name].keys or () for name in plan.group_by)))
    if len(group_keys) > limits.max_groups:
        raise QueryNotSupported(
            f"the query would release {len(group_keys)} groups; at most {limits.max_groups} are allowed"
        )
    confidence = accuracy.confidence if accuracy is not None else CONFIDENCE
    try:
        if not aggregate_plans and not select_keys:
            # Only public keys are released (GROUP BY without an aggregate): nothing to add noise to.
            shares, selection_share = [], 0.0
        elif accuracy is not None:
            if not aggregate_plans:
                raise InvalidQuery("an accuracy target applies to aggregates; give epsilon to select groups")
            shares = epsilons_for_accuracy(
                aggregate_plans,
                half_width=accuracy.half_width,
                confidence=confidence,
                max_contributions=dataset.max_contributions,
            )
            selection_share = max(shares)
        else:
            # Partition selection takes one share, as if it were one more aggregate.
            parts = len(aggregate_plans) + (1 if select_keys else 0)
            shares = even_split(parts, limits.default_epsilon if epsilon is None else epsilon)
            selection_share = shares.pop() if select_keys else 0.0
        total = math.fsum([*shares, selection_share] if select_keys else shares)
        free = not aggregate_plans and not select_keys
        if not free and not (math.isfinite(total) and MIN_QUERY_EPSILON <= total <= limits.max_epsilon):
            asked = "this accuracy would need" if accuracy is not None else "the query asks for"
            raise InvalidQuery(
                f"{asked} epsilon {total:g}; a query may spend between {MIN_QUERY_EPSILON:g} and {limits.max_epsilon:g}"
            )
        mechanisms = build_mechanisms(
            aggregate_plans, epsilons=shares, max_contributions=dataset.max_contributions, confidence=confidence
        )
        selection = None
        if select_keys:
            wanted_delta = limits.default_delta if delta is None else delta
            if not 0 < wanted_delta <= limits.max_delta:
                raise InvalidQuery(f"delta must lie in (0, {limits.max_delta:g}], got {wanted_delta:g}")
            selection = KeySelection(
                max_contributions=dataset.max_contributions,
                epsilon=selection_share,
                delta=wanted_delta,
                confidence=confidence,
            )
    except InvalidPrivacyParameter as exc:
        raise InvalidQuery(exc.message) from exc
    return PreparedQuery(
        plan=plan,
        dataset=dataset,
        grant=grant,
        budget=budget,
        compiled=compile_statistics(plan, dataset, aggregate_plans, select_keys=select_keys, relation=relation),
        mechanisms=mechanisms,
        group_keys=group_keys,
        selection=selection,
        max_groups=limits.max_groups,
        confidence=confidence,
    )


def _exact_statistics(
    prepared: PreparedQuery, rows: list[tuple[Any, ...]], group_keys: tuple[tuple[Any, ...], ...]
) -> tuple[dict[tuple[object, ...], list[int]], list[list[int]] | None]:
    """Per statistic, its exact value for every released group (absent groups are zero); and for a
    quantile, every group's histogram over the candidate grid."""
    compiled = prepared.compiled
    width = compiled.group_width
    position = {key: index for index, key in enumerate(group_keys)}
    totals = {statistic.key: [0] * len(group_keys) for statistic in compiled.statistics}
    grid = compiled.grid
    histograms = [[0] * grid.count for _ in group_keys] if grid is not None else None
    keys = [statistic.key for statistic in compiled.statistics]
    histogram_index = keys.index(("count", grid.column, None)) if grid is not None else -1
    offset = width + (1 if grid is not None else 0)
    for row in rows:
        group = position.get(tuple(row[:width]))
        if group is None:  # a group partition selection left out (public keys are filtered in the source)
            continue
        for statistic, value in zip(compiled.statistics, row[offset:], strict=True):
            totals[statistic.key][group] += int(value or 0)
        if histograms is not None and grid is not None and row[width] is not None:
            bucket = min(max(int(row[width]), 0), grid.count - 1)
            histograms[group][bucket] += int(row[offset + histogram_index] or 0)
    return totals, histograms


def _select_groups(prepared: PreparedQuery, rows: list[tuple[Any, ...]]) -> tuple[tuple[Any, ...], ...]:
    """Partition selection: the groups whose bounded row count passes the noisy threshold.

    Keys travel through OpenDP as JSON text (one-to-one with the key tuples). If more than
    ``max_groups`` pass, those with the largest noisy counts are kept; that and the sort by key are
    post-processing of the mechanism's output."""
    selection = required(prepared.selection, "the selection mechanism")
    compiled = prepared.compiled
    width = compiled.group_width
    offset = width + (1 if compiled.grid is not None else 0)
    rows_index = [statistic.key for statistic in compiled.statistics].index(ROWS.key)
    counts: dict[str, int] = {}
    for row in rows:
        key = json.dumps(list(row[:width]))
        counts[key] = counts.get(key, 0) + int(row[offset + rows_index] or 0)
    selected = selection.release(counts).counts
    kept = sorted(selected, key=lambda key: -selected[key])[: prepared.max_groups]
    groups = [tuple(json.loads(key)) for key in kept]
    return tuple(sorted(groups, key=lambda group: [_sortable(value) for value in group]))


def _sortable(value: Any) -> tuple[bool, Any]:
    return (value is not None, value if value is not None else 0)


def execute(prepared: PreparedQuery, sources: Sources) -> QueryAnswer:
    """Run the pushed-down statement and release every aggregate through its mechanisms."""
    return release(prepared, read(prepared, sources))


def read(prepared: PreparedQuery, sources: Sources) -> list[tuple[Any, ...]]:
    """The exact statistics per group, from the source: the only step that touches the data."""
    if prepared.resolved is not None and prepared.resolved.joined and prepared.relation is not None:
        return sources.run_relation(prepared.relation, prepared.compiled.sql)
    return sources.run(prepared.plan.dataset, prepared.dataset, prepared.compiled.sql)


def release(prepared: PreparedQuery, rows: list[tuple[Any, ...]]) -> QueryAnswer:
    """Add noise to the exact statistics and release them (with the selected groups, their order and
    limit, and per-value accuracies). Each call draws fresh noise: the privacy audit calls this many
    times on one read.

    With public keys, groups with no rows come back from the source as absent and are released from
    noisy zeros, so the presence of a group in the answer says nothing about the data. Without them,
    only groups that pass partition selection are released.
    """
    plan = prepared.plan
    group_keys = _select_groups(prepared, rows) if prepared.selection is not None else prepared.group_keys
    if not group_keys:
        # Nothing passed the threshold: no vector to add noise to, and nothing to release but the shape.
        return QueryAnswer(
            columns=[output.name for output in plan.outputs], rows=[], reports=mechanism_report(prepared)
        )
    exact, histograms = _exact_statistics(prepared, rows, group_keys)
    released = [release_aggregate(mechanism, exact, histograms) for mechanism in prepared.mechanisms]
    lookups = prepared.resolved.lookups if prepared.resolved is not None else {}
    computed = [output for output in plan.outputs if output.kind == "computed"]
    table: list[list[Any]] = []
    widths: dict[str, list[float | None]] = {output.name: [] for output in computed}
    kept: list[int] = []
    for index, key in enumerate(group_keys):
        values: dict[str, Value] = {name: (value, 0.0) for name, value in zip(plan.group_by, key, strict=True)}
        for position, aggregate in enumerate(plan.aggregates):
            values[aggregate.name] = (released[position].values[index], _half_width(released[position].report, index))
        for public, group in plan.lookups:
            value = values[group][0]
            values[public] = (lookups[public].get(str(value)) if value is not None else None, 0.0)
        for output in plan.outputs:
            if output.kind == "computed" and output.expression is not None:
                values[output.name] = evaluate(output.expression, values)
                widths[output.name].append(values[output.name][1])
            elif output.kind == "group":
                values.setdefault(output.name, values[output.column])
        # HAVING acts on released values only: post-processing, as ORDER BY and LIMIT below.
        if plan.having is None or holds(plan.having, values):
            kept.append(index)
        table.append(
            [values[output.column if output.kind != "computed" else output.name][0] for output in plan.outputs]
        )
    reports = {aggregate.name: released[i].report for i, aggregate in enumerate(plan.aggregates)}
    for output in computed:
        reports[output.name] = {
            "computed": output.expression.sql() if output.expression is not None else "",
            "half_width": widths[output.name],
            "approximate_half_width": True,
            "note": "post-processing of released values (no privacy cost); the half-width is propagated to first "
            "order, null where no formula is known",
        }

    columns = [output.name for output in plan.outputs]
    # ORDER BY and LIMIT act on released values only: post-processing, no extra privacy cost. Per-row
    # accuracies are reordered with their rows.
    order = kept
    for name, descending in reversed(plan.order_by):
        position = columns.index(name)
        # A group selected from the data may be NULL: it sorts before every value (after, descending).
        order.sort(key=lambda row_index: _sortable(table[row_index][position]), reverse=descending)
    if plan.limit is not None:
        order = order[: plan.limit]
    for report in reports.values():
        if isinstance(report.get("half_width"), list):
            report["half_width"] = [report["half_width"][row_index] for row_index in order]
    return QueryAnswer(columns=columns, rows=[table[row_index] for row_index in order], reports=reports)


def _half_width(report: dict[str, Any], index: int) -> float | None:
    """One released value's half-width, from its aggregate's report (None: not known, as for a quantile)."""
    width = report.get("half_width")
    if isinstance(width, list):
        return float(width[index]) if width[index] is not None else None
    return float(width) if isinstance(width, int | float) else None


def reserve(
    session: Session,
    prepared: PreparedQuery,
    principal: policy_service.AuthenticatedPrincipal,
    *,
    request_id: str,
    now: datetime,
) -> tuple[int, budget_service.BudgetState]:
    """Reserve the query's (epsilon, delta) under the ledger's lock, before the source is read; return
    the ledger entry and what is left in the unit space once it counts. The caller commits it before
    reading.

    The principal's spends in the space then stay within the allowance of *every* aggregate grant it
    holds there, each over its own period (checked in the same transaction, under the same lock): a
    grant of 1 a month beside one of 6 a year allows 6 a year, not 6 plus 11."""
    entry = budget_service.reserve(
        session,
        prepared.grant,
        principal_id=principal.id,
        dataset=prepared.charged_dataset,
        unit_space=prepared.budget.unit_space,
        caps=prepared.budget.caps,
        epsilon=prepared.epsilon,
        delta=prepared.delta,
        request_id=request_id,
        now=now,
    )
    for sibling in prepared.sibling_grants:
        state = budget_service.budget_state(
            session, sibling, principal_id=principal.id, unit_space=prepared.budget.unit_space, caps=(), now=now
        )
        allowance = state.principal_allowance
        if state.principal_spent > allowance.epsilon or state.principal_delta_spent > allowance.delta:
            raise BudgetExhausted(
                f"this query costs epsilon {prepared.epsilon:g} (delta {prepared.delta:g}), more than is left "
                f"for you in unit space {prepared.budget.unit_space!r} under your grant {sibling.id} "
                f"({allowance.epsilon:g} a {allowance.period}); every grant you hold in a space binds",
                remaining=max(allowance.epsilon - (state.principal_spent - prepared.epsilon), 0.0),
                requested=prepared.epsilon,
                delta_remaining=max(allowance.delta - (state.principal_delta_spent - prepared.delta), 0.0),
                delta_requested=prepared.delta,
            )
    return entry


def selection_report(prepared: PreparedQuery) -> dict[str, Any] | None:
    """How the released groups were chosen, when they were not all public keys."""
    selection = prepared.selection
    if selection is None:
        return None
    return {
        "mechanism": selection.name,
        "scale": selection.scale,
        "threshold": selection.threshold,
        "epsilon": selection.epsilon,
        "delta": selection.delta,
        "reliable_count": selection.reliable_count,
        "max_groups": prepared.max_groups,
        "note": (
            "only groups whose noisy row count reaches the threshold are released; a group with at least "
            "reliable_count rows is released with the stated confidence"
        ),
    }


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
        if built.plan.aggregate.function in ("count", "units", "sum"):
            fixed = built.plan.statistics[0].fixed_point
            report["half_width"] = first.half_width / (fixed.scale if fixed is not None else 1)
        else:
            report["half_width"] = None
            report["note"] = "the half-width of this aggregate depends on the group's size; it comes with the answer"
        reports[name] = report
    return reports


def privacy_report(
    prepared: PreparedQuery, answer: QueryAnswer, remaining: budget_service.BudgetState, now: datetime
) -> dict[str, Any]:
    """The privacy part of an answer: what was spent, how, and what is left in the unit space (for the
    caller, and under each of the space's caps)."""
    grant = prepared.grant
    period = budget_service.period_of(grant.budget_period, now) if grant.budget_period else None
    report: dict[str, Any] = {
        "definition": DEFINITION_APPROXIMATE if prepared.selection is not None else DEFINITION_PURE,
        "privacy_unit": prepared.dataset.privacy_unit,
        "max_contributions": prepared.dataset.max_contributions,
        "epsilon_spent": prepared.epsilon,
        "delta_spent": prepared.delta,
        "confidence": prepared.confidence,
        "aggregates": answer.reports,
        "budget": {
            "unit_space": prepared.budget.unit_space,
            "period": period,
            "epsilon_per_period": grant.epsilon_per_period,
            "epsilon_remaining": remaining.remaining,
            "delta_remaining": remaining.delta_remaining,
            "caps": [
                {
                    "period": budget_service.period_of(cap.period, now),
                    "epsilon_remaining": cap.remaining,
                    "delta_remaining": cap.delta_remaining,
                }
                for cap in remaining.caps
            ],
        },
        "legal_basis": grant.legal_basis,
    }
    selection = selection_report(prepared)
    if selection is not None:
        report["group_selection"] = selection
    resolved = prepared.resolved
    if resolved is not None and resolved.joined:
        report["privacy_unit"] = prepared.dataset.unit.split(".", 1)[1]
        report["join"] = {
            "datasets": list(resolved.private),
            "public_tables": list(resolved.public),
            "max_contributions": prepared.dataset.max_contributions,
            "product_of_max_contributions": resolved.product,
            "note": "one person's joined rows are at most max_contributions: the product of the datasets' own, "
            "or the gateway's max_join_contributions where that is lower (then a random subset is kept)",
        }
    return report
