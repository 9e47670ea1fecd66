"""From a question (SQL subset) to a plan, to pushed-down SQL, to a differentially private answer."""
