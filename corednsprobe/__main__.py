"""`python -m corednsprobe` is the `corednsprobe` command."""

from corednsprobe.cli import main

raise SystemExit(main())
