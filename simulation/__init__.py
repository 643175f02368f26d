"""A synthetic storefront: realistic event streams for the demo, tests and benchmarks."""
