"""The Python client of the REST API, and its optimize loop for a model you train yourself.

Importing it pulls in no server code (no FastAPI, SQLAlchemy or Optuna storage): it needs only
``httpx``, and ``torch`` with ``optim_core`` when a trial builds its optimizer.
"""

from service.client.errors import HPTConnectionError, HPTError, format_detail
from service.client.http import DEFAULT_URL, HPTClient
from service.client.optimize import FINAL_STATUSES, RemoteTrial, TrialPruned

__all__ = [
    "DEFAULT_URL",
    "FINAL_STATUSES",
    "HPTClient",
    "HPTConnectionError",
    "HPTError",
    "RemoteTrial",
    "TrialPruned",
    "format_detail",
]
