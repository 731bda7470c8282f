"""``python -m wow.cli``: the ``wow`` command (:func:`wow.cli.commands.main`)."""

import sys

from wow.cli.commands import main

sys.exit(main())
