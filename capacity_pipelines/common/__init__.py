"""Infrastructure shared by every stage: paths, atomic files, formatting, charts.

Imports nothing else of the package, so every stage may import it."""
