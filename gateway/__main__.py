"""`python -m gateway` is the `slm-gateway` command."""

from gateway.cli import main

raise SystemExit(main())
