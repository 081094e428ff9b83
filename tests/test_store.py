"""The feature store across processes and through the command line: two runs computing the same entry at once (with and
without the lock), and `coop-fast train`/`eval` giving the same records and prompts bit for bit with and without the store."""
import json, os, subprocess, sys, textwrap
from pathlib import Path
import pytest, torch
from coop_fast.cli import main
from coop_fast.data import fake_images
from coop_fast.datasets import fake_dataset
from coop_fast.export import read_prompt
from coop_fast.store import FeatureStore

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, 'PYTHONPATH': str(ROOT), 'HF_HUB_OFFLINE': '1', 'OMP_NUM_THREADS': '1'}
CHILD = textwrap.dedent('''
    import json, os, sys, time, hashlib
    from pathlib import Path
    import torch
    torch.set_num_threads(1)
    from coop_fast.test_utils import seed_all
    from coop_fast.clip import load_clip
    from coop_fast.data import eval_dl, folder_items
    from coop_fast.prompt import CoOpModel
    from coop_fast.learner import image_features
    from coop_fast.store import FeatureStore, stored_features
    imgs, store, me, other, lock = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5] == 'lock'
    seed_all(0)
    clip = load_clip('coop-test-vit', device='cpu')
    items, names = folder_items(imgs)
    dl = eval_dl(items, clip, bs=4, num_workers=0)
    model = CoOpModel(clip, names, n_ctx=2)
    def wait_for(ok, what):
        t = time.time()
        while not ok():
            if time.time() - t > 120: sys.exit(f'{me}: {what} never happened')
            time.sleep(0.01)
    def blocked(f):
        "Whether a process waits for the lock on file `f` (Linux lists a waiter in /proc/locks with '->')"
        s = f.stat()
        tag = f' {os.major(s.st_dev):02x}:{os.minor(s.st_dev):02x}:{s.st_ino} '
        return any('->' in l and tag in l for l in open('/proc/locks'))
    waited = False
    def compute(d):
        global waited
        (store.parent/f'{me}.in').touch()
        if not lock: wait_for((store.parent/f'{other}.in').exists, f'{other} computing')  # both compute at once
        else:
            f = next(store.glob('*.lock'))
            wait_for(lambda: blocked(f), f'{other} waiting for the lock')
            waited = True
        return image_features(model, d, eval_tfms=True, progress=False)
    st = FeatureStore(store, lock=lock)
    f, y = st.features(model, dl, compute)
    ref = image_features(model, dl, eval_tfms=True, progress=False)[0]
    print(json.dumps(dict(misses=st.misses, hits=st.hits, waited=waited, same=bool(torch.equal(f, ref)),
                          digest=hashlib.sha256(f.numpy().tobytes()).hexdigest())))
''')

def two_runs(tmp_path, lock):
    "Start two processes that ask one store for the same missing entry at the same time; their reports"
    imgs = fake_images(tmp_path/'imgs', classes=('a', 'b', 'c'), n=12)
    (tmp_path/'child.py').write_text(CHILD)
    args = lambda me, other: [sys.executable, str(tmp_path/'child.py'), imgs, tmp_path/'store', me, other, 'lock' if lock else 'nolock']
    ps = [subprocess.Popen(args(a, b), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV) for a, b in (('A', 'B'), ('B', 'A'))]
    outs = [p.communicate(timeout=300) for p in ps]
    for p, (o, e) in zip(ps, outs): assert p.returncode == 0, e[-3000:]
    return [json.loads(o.strip().splitlines()[-1]) for o, _ in outs], tmp_path/'store'

def test_two_runs_compute_one_entry_at_once(tmp_path):
    "Without the lock both compute and both write the entry at once: it is whole, and both have the right features"
    (a, b), store = two_runs(tmp_path, lock=False)
    assert (a['misses'], b['misses']) == (1, 1) and a['same'] and b['same'] and a['digest'] == b['digest']
    assert len(list(store.glob('*.safetensors'))) == 1 and not list(store.glob('*.tmp'))
    assert FeatureStore(store).load(json.loads(_key(store))) is not None  # a whole entry, with its key

def _key(store):
    "The key in the header of the one entry of `store`"
    from safetensors import safe_open
    with safe_open(str(next(store.glob('*.safetensors'))), 'pt') as f: return f.metadata()['key']

@pytest.mark.skipif(not Path('/proc/locks').exists(), reason='needs /proc/locks to see a run waiting for the lock')
def test_lock_computes_once(tmp_path):
    "With the lock the second run waits for the first (seen waiting before the first computes) and reads what it wrote"
    (a, b), store = two_runs(tmp_path, lock=True)
    assert sorted((a['misses'], a['hits'], b['misses'], b['hits'])) == [0, 0, 1, 1] and a['misses'] + b['misses'] == 1
    assert [r['waited'] for r in (a, b) if r['misses']] == [True]
    assert a['same'] and b['same'] and a['digest'] == b['digest']
    assert len(list(store.glob('*.safetensors'))) == 1

TINY = ['--arch', 'coop-test-vit', '--pretrained', 'random', '--n_ctx', '4', '--bs', '4', '--workers', '0', '--device', 'cpu', '--quiet']

def ok(*args):
    assert main([str(a) for a in args]) == 0

def _same(a, b):
    "Two result records the same but for when they were made and where their prompts are"
    drop = lambda r: {k: v for k, v in r.items() if k not in ('time', 'seconds', 'prompt')}
    return drop(a) == drop(b)

def test_cli_same_with_and_without_store(tmp_path):
    "`coop-fast train` with the feature cache: records and prompts bit for bit the same with the store (computing, then reading) and without"
    root, store = tmp_path/'data', tmp_path/'store'
    fake_dataset('EuroSAT', root, n=(4, 2, 5))
    run = lambda name, *extra: ok('train', 'EuroSAT', '--root', root, '--shots', 2, '--epochs', 3, '--feature_cache', 0,
                                  '--out', tmp_path/f'{name}.safetensors', *TINY, *extra)
    run('plain', '--no_feature_store')
    run('first', '--feature_store', store)
    assert len(list(store.glob('*.safetensors'))) == 3  # the training, validation and test views
    stamps = {f: f.stat().st_mtime_ns for f in store.glob('*.safetensors')}
    run('second', '--feature_store', store)
    assert {f: f.stat().st_mtime_ns for f in store.glob('*.safetensors')} == stamps  # read, not written again
    recs = {n: json.loads((tmp_path/f'{n}.json').read_text()) for n in ('plain', 'first', 'second')}
    assert _same(recs['plain'], recs['first']) and _same(recs['plain'], recs['second'])
    ctx = {n: read_prompt(tmp_path/f'{n}.safetensors')[0]['prompt_learner.ctx'] for n in recs}
    assert torch.equal(ctx['plain'], ctx['first']) and torch.equal(ctx['plain'], ctx['second'])
    assert recs['plain']['n'] == 25 and 0 <= recs['plain']['accuracy'] <= 1
    # eval of the prompt on the test split: the training run's features, read; the same record as without the store
    ev = lambda name, *extra: ok('eval', tmp_path/'plain.safetensors', 'EuroSAT', '--root', root, '--workers', 0, '--device', 'cpu',
                                 '--out', tmp_path/f'{name}.json', *extra)
    ev('eval_plain', '--no_feature_store'); ev('eval_store', '--feature_store', store)
    assert {f: f.stat().st_mtime_ns for f in store.glob('*.safetensors')} == stamps
    e1, e2 = (json.loads((tmp_path/f'{n}.json').read_text()) for n in ('eval_plain', 'eval_store'))
    assert _same(e1, e2) and e1['accuracy'] == recs['plain']['accuracy'] and e1['per_class'] == recs['plain']['per_class']

def test_cli_store_options(tmp_path):
    assert main(['train', str(tmp_path), '--feature_store', str(tmp_path), '--no_feature_store']) == 2
