"""A stand-in worker for test_isolation.py: guards its process group as optkit's worker does, starts a child of
its own (as the worker starts llama.cpp's converter) and sleeps; it writes "<own pid> <child pid>" to argv[1]."""

import subprocess
import sys
import time
from pathlib import Path

try:
    from optkit.isolate import guard_group
except ImportError:  # an optkit without the guard (the tests show what goes wrong there)
    def guard_group() -> None:
        pass

if __name__ == "__main__":
    guard_group()
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    Path(sys.argv[1]).write_text(f"{__import__('os').getpid()} {child.pid}")
    time.sleep(120)
