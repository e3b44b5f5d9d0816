"""Ingestion: the metric catalog, sources (Prometheus, exports, the demo fleet), extraction
of a window in warehouse shape, its data-quality verdicts and the write of that window."""
