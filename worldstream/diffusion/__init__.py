"""Flow matching, noise schedules and samplers (pure functions)."""
