"""Child process of the crash test: logs as fast as it can and reports what is known to be on disk."""

import sys
import threading
import time

import deepscope

root, run_id = sys.argv[1], sys.argv[2]
run = deepscope.init(dir=root, id=run_id, flush_interval=0.05)


def report() -> None:
    while True:
        print(f"flushed {run._writer.flushed_step}", flush=True)
        time.sleep(0.005)


threading.Thread(target=report, daemon=True).start()
step = 0
while True:
    run.log({"x": step, "y": -step, "z": 0.5}, step=step)
    if step % 5000 == 0:
        run.event("note", f"at {step}", step=step)
    step += 1
