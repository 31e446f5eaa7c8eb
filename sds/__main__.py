"""`python -m sds` is the `sds` command."""

from sds.cli.main import main

raise SystemExit(main())
