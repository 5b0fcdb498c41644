"""`python -m sloguard` runs the same command line as the `sloguard` console script."""

from sloguard.cli import main

raise SystemExit(main())
