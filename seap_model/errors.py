"""The one base class of the errors a user can fix: bad params, audio, manifests, corpus or data sources.

Each message names the file, line or field at fault. ``seap`` prints it on one line and exits with code 2;
anything else that escapes a stage is a bug and keeps its traceback.
"""

from __future__ import annotations


class SeapError(Exception):
    """Bad input, described for the person who can fix it."""
