"""Run the `#| cuda` cells of the notebooks that can run without real CLIP weights or downloads, as `nbdev_test --flags cuda` does.

Every notebook with a `#| cuda` cell is run whole (its other cells too, `#| slow` ones skipped, as nbdev_test does),
except the cuda cells listed in `NEEDS`, which need what a GPU machine here does not have (real weights from a model hub,
data sets downloaded from the internet): those are skipped with the reason. A notebook all of whose cuda cells are
skipped is not run. A new cuda cell runs unless it is added to `NEEDS`.

    python benchmarks/gpu_cells.py --out OUT/cells.json            # on a GPU machine
    python benchmarks/gpu_cells.py --out OUT/cells.json --dry-run  # anywhere: list what would run, check NEEDS is current
"""
import argparse, json, os, re, sys, time, traceback
from pathlib import Path

NBS = Path(__file__).resolve().parents[1]/'nbs'
WEIGHTS, DOWNLOAD = "needs OpenAI's ViT-B/16 weights from the model hub", 'downloads a data set from the internet'
NEEDS = {  # notebook -> {cell id: why it cannot run here}
    '00_clip.ipynb': {'62428456': WEIGHTS},
    '04_learner.ipynb': {'23799c15': WEIGHTS},
    '20_tutorial_fewshot.ipynb': {'03ccf0e0': f'{DOWNLOAD} (EuroSAT)', 'e9fbc306': 'needs the downloaded EuroSAT and real weights'},
    '21_tutorial_domain_shift.ipynb': {'9ae9d407': f'{DOWNLOAD} (MNIST, USPS, SVHN)', '2e5e8eed': 'needs the downloaded digits'},
    '22_tutorial_benchmark.ipynb': {i: 'needs the real benchmark data sets and weights' for i in
                                    ('f3e2da82', 'fd838212', '5ffd898d', 'c1621077', 'f0fe61b1', 'fc12ff2f', 'c4c70554')},
}

def cuda_cells(fn):
    "Ids of the code cells of notebook `fn` flagged `#| cuda`"
    nb = json.loads(Path(fn).read_text())
    return [c['id'] for c in nb['cells'] if c['cell_type'] == 'code' and re.search(r'^#\|\s*cuda\b', ''.join(c['source']), re.M)]

def plan():
    "For each notebook with cuda cells: the cells to run and those skipped with why; and stale entries of `NEEDS`"
    res, stale = {}, []
    for fn in sorted(NBS.glob('*.ipynb')):
        ids = cuda_cells(fn)
        skip = {i: w for i, w in NEEDS.get(fn.name, {}).items() if i in ids}
        stale += [f'{fn.name}:{i}' for i in NEEDS.get(fn.name, {}) if i not in ids]
        if ids: res[fn.name] = dict(run=[i for i in ids if i not in skip], skip=skip)
    stale += [f'{n} (no such notebook)' for n in NEEDS if not (NBS/n).exists()]
    return res, stale

def run_nb(fn, skip_ids):
    "Execute notebook `fn` like `nbdev_test --flags cuda`, skipping the cells `skip_ids`; (ok, seconds, error)"
    from execnb.shell import CaptureShell
    from fastcore.xtras import working_directory
    from nbdev.process import NBProcessor
    from nbdev.frontmatter import FrontmatterProc
    os.environ['IN_TEST'] = '1'
    nb = NBProcessor(fn, procs=FrontmatterProc, process=True).nb
    def no_eval(cell):
        if cell.cell_type != 'code' or 'nbdev_export' + '(' in cell.source or cell.get('id') in skip_ids: return True
        d = getattr(cell, 'directives_', {}) or {}
        return d.get('eval:', [''])[0].lower() == 'false' or 'slow' in d
    t, k = time.time(), CaptureShell(fn)
    try:
        with working_directory(fn.parent): k.run_all(nb, exc_stop=True, preproc=no_eval)
        return True, time.time() - t, None
    except Exception: return False, time.time() - t, k.prettytb(fname=fn)[-4000:] if hasattr(k, 'prettytb') else traceback.format_exc()

def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--out', required=True)
    p.add_argument('--dry-run', action='store_true', help='only list what would run and check NEEDS')
    p.add_argument('--only', nargs='*', help='run only these notebooks')
    a = p.parse_args()
    todo, stale = plan()
    res = dict(notebooks={}, stale_needs=stale)
    for name, c in todo.items():
        r = dict(cuda_cells_run=c['run'], cuda_cells_skipped=c['skip'])
        if not c['run']: r['status'] = 'not run: none of its cuda cells can run without real weights or downloads'
        elif a.dry_run or (a.only and name not in a.only): r['status'] = 'would run' if a.dry_run else 'not asked for'
        else:
            ok, secs, err = run_nb(NBS/name, set(c['skip']))
            r.update(status='passed' if ok else 'failed', seconds=round(secs, 1), **({'error': err} if err else {}))
        res['notebooks'][name] = r
        print(f"{name}: {r['status']}" + (f" ({r['seconds']} s)" if 'seconds' in r else '') +
              (f"; cuda cells skipped: {', '.join(f'{i} ({w})' for i, w in c['skip'].items())}" if c['skip'] else ''), flush=True)
        if r.get('error'): print(r['error'], file=sys.stderr)
    Path(a.out).write_text(json.dumps(res, indent=1))
    if stale: print(f"NEEDS names cells that are not cuda cells (any more): {', '.join(stale)}", file=sys.stderr)
    sys.exit(1 if stale or any(r['status'] == 'failed' for r in res['notebooks'].values()) else 0)

if __name__ == '__main__': main()
