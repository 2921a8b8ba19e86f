"""`python -m worker.heartbeat check`: the workers' health check (queueing/heartbeat.py).

Kept here so that the command stays the same; nothing imports this module.
"""

from __future__ import annotations

import sys

from queueing.heartbeat import main

if __name__ == "__main__":
    sys.exit(main())
