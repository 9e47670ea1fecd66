"""Who may do what, for which purpose, on which legal basis: identities, grants, casbin, budgets."""
