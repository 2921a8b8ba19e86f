"""`python -m worker.reconcile [--once]`: the reconciler's command (queueing/reconcile.py).

Kept here so that the command stays the same; nothing imports this module.
"""

from __future__ import annotations

from queueing.reconcile import main

if __name__ == "__main__":
    main()
