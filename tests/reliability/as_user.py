"""Run `kb ingest` as another (unprivileged) user, for the chmod 000 tests when the suite runs as root.

The interpreter of the test machine may live where that user cannot read (e.g. under /root), so this
script does one warm-up ingest as root first (every module imported, the embedder loaded), then drops
to the given uid/gid and runs the real command in the same process.

    python as_user.py UID WARMUP_FOLDER -- ingest FOLDER --kb NAME --json
"""

from __future__ import annotations

import os
import sys
import tempfile


def main() -> None:
    uid, warm = int(sys.argv[1]), sys.argv[2]
    args = sys.argv[sys.argv.index("--") + 1:]
    from kb import KnowledgeBase
    from kb.cli import main as kb_main
    from kb.config import Settings

    with tempfile.TemporaryDirectory() as home:
        with KnowledgeBase.open("warmup", settings=Settings(home=home)) as base:
            base.ingest(warm)
    os.setgroups([])
    os.setgid(uid)
    os.setuid(uid)
    sys.argv = ["kb", *args]
    kb_main()


if __name__ == "__main__":
    main()
