"""capacity_pipelines: capacity planning for LLM-backed, multi-agent services.

Pure domain modules live beside this file and never import Dagster; the Dagster glue lives in
`capacity_pipelines.defs` and is loaded by `capacity_pipelines.definitions`.
"""

__version__ = "0.1.0"
