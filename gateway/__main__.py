"""`python -m gateway [compose|serve ...]`; with no command it serves with the defaults."""

from __future__ import annotations

import sys

from gateway.cli import gateway_app, serve

if __name__ == "__main__":
    if len(sys.argv) == 1:
        serve()
    else:
        gateway_app()
