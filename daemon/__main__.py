"""``python -m daemon``: lo mismo que el comando ``videonote-dl``."""

from daemon.cli import main

raise SystemExit(main())
