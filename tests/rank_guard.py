"""`dt-attn` as one torchrun rank, for the DDP tests: on ranks other than 0, any write under the folder
$DT_ATTN_RANK_GUARD ends the process at once (exit code 17), so a test proves that rank 0 alone writes there.
Every rank prints its exit code ("rank R exit N") when the command returns.

python -m torch.distributed.run --standalone --nproc-per-node 2 tests/rank_guard.py train ...
"""

import os
import sys

WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
CHANGES = {"os.mkdir", "os.rename", "os.remove", "os.rmdir", "os.truncate", "os.symlink", "os.link",
           "shutil.rmtree"}


def _guard(root: str, rank: str) -> None:
    def hook(event: str, args: tuple) -> None:
        if event == "open":
            path, _, flags = args
            if not (isinstance(flags, int) and flags & WRITE_FLAGS):
                return
        elif event in CHANGES:
            path = args[0]
        else:
            return
        if not isinstance(path, (str, bytes, os.PathLike)):
            return
        if os.path.realpath(os.fsdecode(path)).startswith(root):
            sys.stderr.write(f"rank {rank} wrote {os.fsdecode(path)} ({event})\n")
            os._exit(17)  # not an exception: nothing may catch it

    sys.addaudithook(hook)


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    guarded = os.environ.get("DT_ATTN_RANK_GUARD")
    if guarded and os.environ.get("RANK", "0") != "0":
        _guard(os.path.realpath(guarded), os.environ["RANK"])
    from experiments.cli import main

    code = main(sys.argv[1:])
    sys.stderr.write(f"rank {os.environ.get('RANK', '0')} exit {code}\n")
    sys.exit(code)
