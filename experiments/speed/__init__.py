"""Speed benchmarks (docs/design.md, Discovery and confirmation): environment steps/s, agent speed, checkpoint cost, the suite."""
