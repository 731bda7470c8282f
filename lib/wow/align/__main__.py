"""``python -m wow.align``: :func:`wow.align.command.main`."""

from wow.align.command import main

raise SystemExit(main())
