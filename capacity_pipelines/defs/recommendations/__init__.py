"""Recommendations: the ranked, scored list SREs review (`capacity recs`)."""
