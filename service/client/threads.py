"""Whether the user's torch fights the service's workers for this machine's cores.

torch is looked at only when the user's code has imported it already: the client never imports
it for this.
"""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path
from urllib.parse import urlsplit


def torch_threads_warning(api_url: str, n_jobs: int) -> str | None:
    """What to say when torch trains with one thread per core in this process while the API at
    ``api_url`` (and so, most likely, its workers) runs on this machine; ``None``: all is well,
    or torch is not imported (yet)."""
    torch = sys.modules.get("torch")
    if torch is None or not is_this_machine(api_url):
        return None
    threads, cores = torch.get_num_threads(), physical_cores()
    if threads < max(2, cores):
        return None
    share = max(1, cores // 2 // n_jobs)
    leave_to = f"each of your {n_jobs} training threads" if n_jobs > 1 else "your training"
    return (
        f"torch trains with {threads} threads here, one per core, while the service at "
        f"{api_url} runs its workers on this machine too: they compete for the same cores and "
        "every training slows down. Call torch.set_num_threads(N) before optimize(), N being "
        f"the cores you leave to {leave_to} (e.g. torch.set_num_threads({share}))."
    )


def is_this_machine(url: str) -> bool:
    """Whether the API at ``url`` runs on this machine."""
    host = (urlsplit(url).hostname or "").lower()
    local = {"localhost", "::1", "0.0.0.0", "::", socket.gethostname().lower()}
    return host in local or host.startswith("127.") or host.endswith(".localhost")


def physical_cores() -> int:
    """The cores this process may run on, a core's hyperthreads counted once where Linux says
    so (torch's default thread count is the physical cores)."""
    if not hasattr(os, "sched_getaffinity"):
        return os.cpu_count() or 1
    cores = set()
    for cpu in os.sched_getaffinity(0):
        siblings = Path(f"/sys/devices/system/cpu/cpu{cpu}/topology/thread_siblings_list")
        try:
            cores.add(siblings.read_text().strip())
        except OSError:
            cores.add(str(cpu))
    return len(cores)
