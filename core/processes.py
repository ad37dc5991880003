"""Whether a process of this host still runs: what run leases and upload folders are owned by."""

from __future__ import annotations

import os

__all__ = ["pid_alive"]


def pid_alive(pid: int) -> bool:
    """Return False only when no process ``pid`` exists on this host (one we may not signal counts as alive)."""
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
