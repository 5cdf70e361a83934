"""Benchmarks: commands that measure, not tests. `python -m benchmarks [online|scale|model] [--quick]`,
and `python -m benchmarks report PATH...` for the Markdown pages of its JSON reports."""
