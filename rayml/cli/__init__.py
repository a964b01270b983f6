"""The ``rayml`` command line (``rayml.cli.main:main``, or ``python -m rayml.cli``).

* :mod:`~rayml.cli.main` -- the typer app: ``serve``, ``submit``, ``status``, ``pipelines``,
  ``kafka start|stop|status``, ``topics create``; the only place that configures logging;
* :mod:`~rayml.cli.options` -- the options every command shares and the parsing of ``--params``;
* :mod:`~rayml.cli.submit`, :mod:`~rayml.cli.training` (``train``, ``models``),
  :mod:`~rayml.cli.status`;
* :mod:`~rayml.cli.local_ray` -- the local Ray of ``rayml serve``, in a session of its own;
* :mod:`~rayml.cli.demo` -- ``make demo``: a local broker, a local Ray, a trained model, a
  burst of requests.

The top layer: it may import every other subpackage; nothing imports it.
"""
