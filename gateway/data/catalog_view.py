"""What a caller may see of the catalog and of its budgets: metadata and public keys, never row data.

A dataset is visible to a caller who holds a usable grant on it (any action, any purpose); to anyone else
it does not exist, so the listing reveals nothing about datasets a caller cannot use.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from gateway.data.catalog import Catalog, ColumnSpec, DatasetSpec
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


def describe(name: str, dataset: DatasetSpec, grants: list[Grant], *, detail: bool) -> dict[str, Any]:
    view: dict[str, Any] = {
        "name": name,
        "description": dataset.description,
        "privacy_unit": dataset.privacy_unit,
        "max_contributions": dataset.max_contributions,
        "actions": sorted({grant.action for grant in grants}),
        "purposes": sorted({grant.purpose for grant in grants}),
        "global_budget": dataset.global_budget.model_dump(),
    }
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
    """Per dataset and aggregate grant: the caller's allowance, spent and remaining this period, and the
    dataset's global cap."""
    entries = []
    for name, grants in sorted(visible.items()):
        cap = catalog.datasets[name].global_budget.allowance()
        for grant in grants:
            if grant.action != "aggregate" or grant.epsilon_per_period is None:
                continue
            state = budget_service.budget_state(session, grant, principal.id, name, now, cap)
            entries.append(
                {
                    "dataset": name,
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
                    "dataset_cap": {
                        "period": budget_service.period_of(cap.period, now),
                        "epsilon_per_period": cap.epsilon,
                        "epsilon_spent": state.dataset_spent,
                        "epsilon_remaining": state.dataset_remaining,
                        "delta_per_period": cap.delta,
                        "delta_spent": state.dataset_delta_spent,
                        "delta_remaining": state.dataset_delta_remaining,
                    },
                }
            )
    return entries
