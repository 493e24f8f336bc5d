"""A stand-in module for test_isolation.py's warm start: prints what a fresh process would have, then exits 7."""

import atexit
import os
import sys

if __name__ == "__main__":
    print(f"preloaded={[m for m in ('torch', 'xml.dom.minidom') if m in sys.modules]}")
    if "--torch" in sys.argv:  # what a warm server asked for torch has imported
        import torch  # noqa: F401
    rss = [line.split()[1] for line in open("/proc/self/status") if line.startswith("VmRSS:")]
    print(f"rss_kb={rss[0]}")
    print(f"argv={sys.argv[1:]}")
    print(f"name={__name__}")
    print(f"parent={os.getppid()}")
    print(f"group_leader={os.getpgrp() == os.getpid()}")
    print(f"path={os.environ.get('PATH')}")
    atexit.register(lambda: print("atexit ran", flush=True))
    sys.exit(7)
