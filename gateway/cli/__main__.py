"""``python -m gateway.cli``: the same as the ``datapoort`` console script."""

from gateway.cli import main

main()
