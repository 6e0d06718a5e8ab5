"""Experiments, paper tables and benchmarks: scripts run from the repository root as
`python -m benchmarks.<name>`, never imported by the product (models/, export/, service/, media/)."""
