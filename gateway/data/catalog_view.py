"""What a caller may see of the catalog and of its budgets: metadata and public keys, never row data.

A dataset is visible to a caller who holds a usable grant on it (any action, any purpose); to anyone else
it does not exist, so the listing reveals nothing about datasets a caller cannot use.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from gateway.data.catalog import Catalog, ColumnSpec, DatasetSpec, SpaceBudget
from gateway.exceptions import DatasetNotFound
from policies import budget as budget_service
from policies import service as policy_service
from policies.enforcer import PolicyEngine
from policies.models import Grant

_NUMERIC_AGGREGATES = ["SUM", "AVG", "VARIANCE", "STDDEV", "MEDIAN", "PERCENTILE_CONT"]


def visible_grants(
    session: Session,
    engine: PolicyEngine,
    principal: policy_service.AuthenticatedPrincipal,
    catalog: Catalog,
    now: datetime,
) -> dict[str, list[Grant]]:
    visible: dict[str, list[Grant]] = defaultdict(list)
    for dataset, grant in policy_service.usable_grants(session, engine, principal, catalog.datasets, now=now):
        if grant.action in catalog.datasets[dataset].actions:
            visible[dataset].append(grant)
    return dict(visible)


def _grouping(name: str, spec: ColumnSpec, dataset: DatasetSpec) -> str | None:
    """How a GROUP BY on the column is released: every public key, groups passing partition selection,
    or not at all (``None``)."""
    if spec.kind == "identifier" or name == dataset.privacy_unit or spec.type == "float":
        return None
    return "public_keys" if spec.keys is not None else "partition_selection"


def _column(name: str, dataset: DatasetSpec) -> dict[str, Any]:
    spec = dataset.columns[name]
    numeric = spec.type in ("integer", "float") and spec.lower is not None and name != dataset.privacy_unit
    view: dict[str, Any] = {
        "type": spec.type,
        "kind": spec.kind,
        "description": spec.description,
        "lower": spec.lower,
        "upper": spec.upper,
        "public_keys": list(spec.keys) if spec.keys is not None and spec.kind != "identifier" else None,
        "groupable": _grouping(name, spec, dataset),
        "aggregates": ["COUNT", *(_NUMERIC_AGGREGATES if numeric else [])],
    }
    return view


def _cap(cap: budget_service.Allowance) -> dict[str, Any]:
    return {"epsilon_per_period": cap.epsilon, "delta_per_period": cap.delta, "period": cap.period}


def describe(
    name: str, dataset: DatasetSpec, grants: list[Grant], *, detail: bool, budget: SpaceBudget
) -> dict[str, Any]:
    """``budget`` is the dataset's unit space: its caps, not the dataset's own, are what a query is held
    to when the dataset shares its persons with others."""
    period_cap, *longer = budget.caps
    view: dict[str, Any] = {
        "name": name,
        "kind": dataset.kind,
        "description": dataset.description,
        "privacy_unit": dataset.privacy_unit,
        "unit_space": budget.unit_space,
        "max_contributions": dataset.max_contributions,
        "actions": sorted({grant.action for grant in grants}),
        "purposes": sorted({grant.purpose for grant in grants}),
        "global_budget": _cap(period_cap),
        "longer_cap": _cap(longer[0]) if longer else None,
    }
    if dataset.public:  # read exactly and free of budget: no unit, space or caps apply
        view.update(unit_space=None, max_contributions=None, global_budget=None, longer_cap=None)
    if detail:
        view["columns"] = {column: _column(column, dataset) for column in dataset.columns}
    return view


def dataset_or_404(visible: dict[str, list[Grant]], catalog: Catalog, name: str) -> tuple[DatasetSpec, list[Grant]]:
    dataset = catalog.dataset(name)
    if dataset is None or name not in visible:
        raise DatasetNotFound(f"there is no dataset {name!r} you may use")
    return dataset, visible[name]


def budgets(
    session: Session,
    principal: policy_service.AuthenticatedPrincipal,
    visible: dict[str, list[Grant]],
    catalog: Catalog,
    now: datetime,
) -> list[dict[str, Any]]:
    """Per unit space and aggregate grant: the space's datasets the caller may see, the caller's
    allowance under the grant with what it spent and has left in the whole space this period, and each
    of the space's caps. One space's entries show the same spends: they all draw on one budget."""
    spaces: dict[str, set[str]] = defaultdict(set)
    grants: dict[tuple[str, int], Grant] = {}
    for name, held in visible.items():
        if catalog.datasets[name].public:
            continue  # nothing is ever spent on a public table
        space = catalog.unit_space_of(name)
        spaces[space].add(name)
        for grant in held:
            if grant.action == "aggregate" and grant.epsilon_per_period is not None:
                grants[(space, grant.id)] = grant
    entries = []
    for (space, _), grant in sorted(grants.items()):
        datasets = sorted(spaces[space])
        budget = catalog.space_budget(datasets[0])
        state = budget_service.budget_state(
            session, grant, principal_id=principal.id, unit_space=space, caps=budget.caps, now=now
        )
        entries.append(
            {
                "unit_space": space,
                "datasets": datasets,
                "dataset": grant.dataset,
                "purpose": grant.purpose,
                "grant_id": grant.id,
                "legal_basis": grant.legal_basis,
                "period": budget_service.period_of(state.principal_allowance.period, now),
                "epsilon_per_period": state.principal_allowance.epsilon,
                "epsilon_spent": state.principal_spent,
                "epsilon_remaining": state.remaining,
                "delta_per_period": state.principal_allowance.delta,
                "delta_spent": state.principal_delta_spent,
                "delta_remaining": state.delta_remaining,
                "caps": [
                    {
                        "period": budget_service.period_of(cap.period, now),
                        "epsilon_per_period": cap.allowance.epsilon,
                        "epsilon_spent": cap.spent,
                        "epsilon_remaining": cap.remaining,
                        "delta_per_period": cap.allowance.delta,
                        "delta_spent": cap.delta_spent,
                        "delta_remaining": cap.delta_remaining,
                    }
                    for cap in state.caps
                ],
            }
        )
    return entries
