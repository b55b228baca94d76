"""The one error type of deploy/: a single line that says what is wrong and what to do."""

from __future__ import annotations


class DeployError(Exception):
    """Printed as one line by `doorward up`; the message must name the fix, never a secret."""
