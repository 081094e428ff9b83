"""Hunt for checks that pass by chance: run notebooks and test files under many seeds (`COOP_FAST_TEST_SEED`, which
`coop_fast.test_utils.seed_all` reads), and optionally the whole `make test` several times in a fresh clone; report every
failure with its seed and first error line. Not part of `make test` (it takes long).

    python tools/flakes.py --seeds 50 nbs/01_prompt.ipynb tests/test_export.py
    python tools/flakes.py --seeds 50 --all          # every notebook and test file
    python tools/flakes.py --suite 5                 # `make test` 5 times in a row in a fresh clone of this repository
    python tools/flakes.py --variants                # `make test` as other CPUs run it: kernels default, avx2; threads 1, 2
    python tools/flakes.py --variants avx2 threads=1 # only those
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

def _clone() -> Path:
    "A fresh clone of this repository's committed HEAD in a new temporary folder"
    d = Path(tempfile.mkdtemp(prefix='coop-flakes-'))/'repo'
    subprocess.run(['git', 'clone', '-q', str(root), str(d)], check=True)
    return d

def _make_test(d:Path, name:str, env:dict=None) -> tuple:
    "(error or None, seconds) of one `make test` in clone `d` with `env` added, its output in `d/../make_test_{name}.log`"
    t = time.time()
    r = subprocess.run(['make', 'test'], cwd=d, capture_output=True, text=True, env={**os.environ, **(env or {})})
    log = d.parent/f'make_test_{name}.log'
    log.write_text(r.stdout + r.stderr)
    print(f"make test {name}: {'passed' if r.returncode == 0 else 'FAILED'} in {time.time() - t:.0f} s; its output: {log}"
          + (f"\n    its last line: {_last_line(r.stdout)}" if r.stdout.strip() else ''), flush=True)
    return None if r.returncode == 0 else _first_error(r.stdout + r.stderr), time.time() - t

def _last_line(text:str) -> str: return [l for l in text.splitlines() if l.strip()][-1].strip()[:200]

def run_suite(n:int) -> list:
    "(run, error or None, seconds) of `make test` run `n` times in a fresh clone of this repository"
    d = _clone()
    return [(i + 1, *_make_test(d, str(i + 1))) for i in range(n)]

VARIANTS = {'default': dict(ATEN_CPU_CAPABILITY='default'), 'avx2': dict(ATEN_CPU_CAPABILITY='avx2'),
            'threads=1': dict(OMP_NUM_THREADS='1', MKL_NUM_THREADS='1'),
            'threads=2': dict(OMP_NUM_THREADS='2', MKL_NUM_THREADS='2')}

def capability(env:dict) -> str:
    "The CPU kernels and thread count PyTorch runs under `env`, as it reports them"
    code = 'import torch; print(torch.backends.cpu.get_cpu_capability().lower(), torch.get_num_threads())'
    r = subprocess.run([PY, '-c', code], capture_output=True, text=True, env={**os.environ, **env}, check=True)
    return r.stdout.split()

def run_variants(names:list) -> list:
    "(variant, error or None, seconds) of `make test` in a fresh clone under each variant; one PyTorch can't run is a failure"
    d, res = _clone(), []
    for name in names:
        env = VARIANTS[name]
        kern, threads = capability(env)
        want = env.get('ATEN_CPU_CAPABILITY', kern), env.get('OMP_NUM_THREADS', threads)
        if (kern, threads) != want:
            msg = f"not available on this machine: PyTorch runs kernels {kern} with {threads} thread(s), not {want[0]} / {want[1]}"
            print(f"make test {name}: {msg}", flush=True)
            res.append((name, msg, 0.)); continue
        res.append((name, *_make_test(d, name.replace('=', ''), env)))
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
    ap.add_argument('--variants', nargs='*', choices=list(VARIANTS), metavar='VARIANT',
                    help=f"also run `make test` in a fresh clone under each of {', '.join(VARIANTS)} (all when none is named)")
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
    if a.variants is not None:
        res = run_variants(a.variants or list(VARIANTS))
        fails += sum(e is not None for _, e, _ in res)
        for v, e, t in res:
            if e: print(f"    make test {v}: {e}")
    print(f"{'no failures' if not fails else f'{fails} failure(s)'}: {len(todo)} target(s) x {len(seeds)} seeds"
          + (f", make test x {a.suite}" if a.suite else '')
          + (f", make test under {', '.join(a.variants or VARIANTS)}" if a.variants is not None else ''))
    sys.exit(1 if fails else 0)

if __name__ == '__main__': main()
