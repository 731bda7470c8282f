"""The ``wow`` command (:mod:`wow.cli.commands`): ``wow run`` (the notebooks in order), ``wow estimate``,
``wow compare``, ``wow data``, the preflight, the rehearsal (``--fast-dev-run``) and its local stand-in server."""
