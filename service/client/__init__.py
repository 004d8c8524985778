"""The Python client of the REST API, and its optimize loop for a model you train yourself.

Importing it pulls in no server code (no FastAPI, SQLAlchemy, Optuna, Starlette or uvicorn): it
needs only ``httpx``; ``tqdm`` when ``optimize`` shows a progress bar, and ``torch`` with
``optim_core`` when a trial builds its optimizer.
"""

from service.client.errors import HPTConnectionError, HPTError, format_detail
from service.client.http import DEFAULT_URL, HPTClient
from service.client.optimize import FINAL_STATUSES, RemoteTrial, TrialDiverged, TrialPruned

__all__ = [
    "DEFAULT_URL",
    "FINAL_STATUSES",
    "HPTClient",
    "HPTConnectionError",
    "HPTError",
    "RemoteTrial",
    "TrialDiverged",
    "TrialPruned",
    "format_detail",
]
