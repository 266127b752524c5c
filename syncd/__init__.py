"""syncd: keep a CRM in step with a Berkshire Receptionists answering-service account.

Data flows one way: source -> store -> match -> connector -> store.
"""

from syncd._version import __version__

__all__ = ["__version__"]
