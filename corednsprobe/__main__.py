"""`python -m corednsprobe` is the `corednsprobe` command."""

from corednsprobe.cli.main import main

raise SystemExit(main())
