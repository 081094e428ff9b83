"""What the benchmark scripts share: the peak memory of one training step, measured in a fresh child process.

A script measures with `child_memory(__file__, *args)`, which runs `python SCRIPT --mem-child ARGS`; the script's
`--mem-child` branch builds the step for ARGS and calls `report_peak(step)`, which prints the result as JSON.
"""
import json, os, subprocess, sys, threading, time
import psutil

MEM_LIMIT_GB = 14  # a child using more is stopped: the machine has 23 GB, and the parent holds models too

def report_peak(step):
    "Print the peak resident memory (MB) that `step()` adds to this process, as JSON; stop the process above `MEM_LIMIT_GB`"
    proc, peak, done = psutil.Process(), [0], threading.Event()
    base = proc.memory_info().rss
    def watch():
        while not done.is_set():
            peak[0] = max(peak[0], proc.memory_info().rss)
            if peak[0] - base > MEM_LIMIT_GB * 2**30:
                print(json.dumps(dict(peak_mb=None, over_gb=MEM_LIMIT_GB)), flush=True); os._exit(3)
            time.sleep(0.002)
    th = threading.Thread(target=watch); th.start()
    step()
    done.set(); th.join()
    print(json.dumps(dict(peak_mb=(peak[0] - base) / 2**20)))

def child_memory(script, *args):
    "Peak MB of the step that `script --mem-child args` measures in a fresh process, or None when it needs more than `MEM_LIMIT_GB`"
    args = [str(a) for a in args]
    out = subprocess.run([sys.executable, str(script), '--mem-child', *args], capture_output=True, text=True)
    lines = out.stdout.strip().splitlines()
    if not lines and out.returncode == -9: return None  # killed by the kernel for memory: it does not fit either
    if not lines: raise RuntimeError(f"memory child {' '.join(args)} failed ({out.returncode}): {out.stderr[-2000:]}")
    return json.loads(lines[-1])['peak_mb']
