"""Benchmarks of the talking-avatar service, run from the repository root as modules, e.g.
`python -m benchmarks.run --quick`; their shared helpers import as `from benchmarks import cpu_usage`."""
