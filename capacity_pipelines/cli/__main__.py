"""`python -m capacity_pipelines.cli`: the `capacity` command."""

import sys

from capacity_pipelines.cli import main

sys.exit(main())
