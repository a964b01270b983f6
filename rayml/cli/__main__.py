"""``python -m rayml.cli``: the ``rayml`` command line."""

from rayml.cli.main import main

main()
