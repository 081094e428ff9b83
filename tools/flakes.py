"""Hunt for checks that pass by chance: run notebooks and test files under many seeds (`COOP_FAST_TEST_SEED`, which
`coop_fast.test_utils.seed_all` reads), and optionally the whole `make test` several times in a fresh clone; report every
failure with its seed and first error line. Not part of `make test` (it takes long).

    python tools/flakes.py --seeds 50 nbs/01_prompt.ipynb tests/test_export.py
    python tools/flakes.py --seeds 50 --all          # every notebook and test file
    python tools/flakes.py --suite 5                 # `make test` 5 times in a row in a fresh clone of this repository
"""
import argparse, os, subprocess, sys, tempfile, time, traceback
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

root = Path(__file__).resolve().parents[1]
PY = sys.executable

def _first_error(text:str) -> str:
    "The most telling line of a failure's output"
    lines = [l.strip() for l in text.splitlines() if l.strip()]
    for key in ('Error:', 'Error ', 'assert', 'FAILED'):
        hit = [l for l in lines if key in l]
        if hit: return hit[-1][:200]
    return lines[-1][:200] if lines else '(no output)'

def run_notebook(nb:str, seeds:list) -> list:
    "(seed, error or None) for each seed: notebook `nb` run in this process, one fresh kernel per seed"
    os.environ.setdefault('HF_HUB_OFFLINE', '1')
    import io, contextlib, multiprocessing
    # this process was spawned, which made spawn the default; nbdev_test's DataLoader workers fork (Linux), so fork here too
    if 'fork' in multiprocessing.get_all_start_methods(): multiprocessing.set_start_method('fork', force=True)
    from nbdev.test import test_nb
    res = []
    for s in seeds:
        os.environ['COOP_FAST_TEST_SEED'] = str(s)
        out = io.StringIO()
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
                ok, _ = test_nb(root/nb, skip_flags=['slow', 'cuda'])
            res.append((s, None if ok else _first_error(out.getvalue())))
        except Exception: res.append((s, _first_error(traceback.format_exc())))
    return res

def run_tests(path:str, seeds:list) -> list:
    "(seed, error or None) for each seed: pytest on test file `path` in a subprocess"
    res = []
    for s in seeds:
        env = {**os.environ, 'COOP_FAST_TEST_SEED': str(s), 'HF_HUB_OFFLINE': '1', 'PYTHONPATH': str(root)}
        r = subprocess.run([PY, '-m', 'pytest', '-q', '-x', '-p', 'no:cacheprovider', path], cwd=root, env=env,
                           capture_output=True, text=True)
        res.append((s, None if r.returncode == 0 else _first_error(r.stdout + r.stderr)))
    return res

def _job(target, seeds): return target, (run_notebook if target.endswith('.ipynb') else run_tests)(target, seeds)

def run_suite(n:int) -> list:
    "(run, error or None, seconds) of `make test` run `n` times in a fresh clone of this repository"
    d = Path(tempfile.mkdtemp(prefix='coop-flakes-'))/'repo'
    subprocess.run(['git', 'clone', '-q', str(root), str(d)], check=True)
    res = []
    for i in range(n):
        t = time.time()
        r = subprocess.run(['make', 'test'], cwd=d, capture_output=True, text=True)
        log = d.parent/f'make_test_{i + 1}.log'
        log.write_text(r.stdout + r.stderr)
        res.append((i + 1, None if r.returncode == 0 else _first_error(r.stdout + r.stderr), time.time() - t))
        print(f"make test run {i + 1}/{n}: {'passed' if r.returncode == 0 else 'FAILED'} in {time.time() - t:.0f} s; its output: {log}",
              flush=True)
    return res

def targets(all_:bool, given:list) -> list:
    "Notebooks and test files to run"
    if not all_: return given
    nbs = sorted(p.relative_to(root).as_posix() for p in (root/'nbs').glob('*.ipynb'))
    return nbs + sorted(p.relative_to(root).as_posix() for p in (root/'tests').glob('test_*.py'))

def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('targets', nargs='*', help='notebooks (nbs/X.ipynb) and test files (tests/test_x.py)')
    ap.add_argument('--all', action='store_true', help='every notebook and test file')
    ap.add_argument('--seeds', type=int, default=50, help='seeds 0..N-1 for each target')
    ap.add_argument('--first', type=int, default=0, help='first seed')
    ap.add_argument('--workers', type=int, default=2, help='targets run at once')
    ap.add_argument('--suite', type=int, default=0, help='also run `make test` this many times in a fresh clone')
    a = ap.parse_args()
    seeds, fails = list(range(a.first, a.first + a.seeds)), 0
    todo = targets(a.all, a.targets)
    if todo:
        with ProcessPoolExecutor(a.workers, max_tasks_per_child=1) as ex:  # a notebook replaces its process's __main__
            for target, res in ex.map(_job, todo, [seeds] * len(todo)):
                bad = [(s, e) for s, e in res if e]
                fails += len(bad)
                print(f"{target}: {len(res) - len(bad)}/{len(res)} seeds passed" +
                      ''.join(f"\n    seed {s}: {e}" for s, e in bad), flush=True)
    if a.suite:
        res = run_suite(a.suite)
        fails += sum(e is not None for _, e, _ in res)
        for i, e, t in res:
            if e: print(f"    make test run {i}: {e}")
    print(f"{'no failures' if not fails else f'{fails} failure(s)'}: {len(todo)} target(s) x {len(seeds)} seeds"
          + (f", make test x {a.suite}" if a.suite else ''))
    sys.exit(1 if fails else 0)

if __name__ == '__main__': main()
