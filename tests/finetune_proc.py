"""`seap finetune` in a child process, with test-only faults set by environment variables:

* ``SEAP_TEST_KILL_IN_SAVE=n``: SIGKILL this process in the middle of the n-th checkpoint save (after the new
  step folder is in place, before ``latest`` names it: the window where only the old checkpoint is valid);
* ``SEAP_TEST_NO_RESUME=1``: never resume (the loader finds nothing), to show that the resume test can fail.

Usage: python tests/finetune_proc.py PARAMS_YAML
"""

from __future__ import annotations

import os
import signal
import sys

from seap_model.cli import main
from seap_model.training import checkpoint, loop

if os.environ.get("SEAP_TEST_KILL_IN_SAVE"):
    kill_at, saves, real_point = int(os.environ["SEAP_TEST_KILL_IN_SAVE"]), [0], checkpoint.point_latest

    def point_latest(root, name):
        saves[0] += 1
        if saves[0] == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
        real_point(root, name)

    checkpoint.point_latest = point_latest

if os.environ.get("SEAP_TEST_NO_RESUME"):
    loop.load_checkpoint = lambda *args, **kwargs: None

if __name__ == "__main__":
    sys.exit(main(["finetune", "--params", sys.argv[1]]))
