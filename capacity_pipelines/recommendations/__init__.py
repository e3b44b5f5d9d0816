"""Scored recommendations: findings from every domain, one ranked list, SRE review, validation.

Pure Python (no Dagster import): `engine.build_recommendations` is what the Dagster asset, the
tests and a notebook call; `cli.py` is the SREs' review workflow (`capacity recs ...`).
"""
