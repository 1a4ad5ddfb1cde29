"""The operator process: Kopf wired with Plait's settings, health, metrics and webhook.

Components register their handlers (``<component>/handlers.py``) into one
:class:`kopf.OperatorRegistry`; this package runs them. It alone writes to Kubernetes.
"""

from plait.controller.options import OperatorOptions

__all__ = ["OperatorOptions"]
