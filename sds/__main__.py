"""`python -m sds` is the `sds` command."""

from sds.cli import main

raise SystemExit(main())
