"""Token cost: LLM spend per agent, model and provider from a dated price book.

Pure Python (Polars), no Dagster import: `prices` loads the book, `usage` validates the usage
contract, `traces` turns per-request trace files into it, `costing` prices every row, `report`
and `savings` build the report content, `cli` exposes `capacity token-cost`.
"""
