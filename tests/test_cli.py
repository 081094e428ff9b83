"The `coop-fast` command end to end on the tiny test CLIP: train, eval, predict, results, demo; determinism; resuming."
import importlib.machinery, importlib.util, json, os, signal, subprocess, sys, time, types
from pathlib import Path
import pytest, torch
from fastcore.basics import defaults
from fastai.callback.core import Callback
import coop_fast
from coop_fast.cli import commands, run_cli
from coop_fast.experiments import result_kind
from coop_fast.checkpoint import read_checkpoint
from coop_fast.data import fake_images, fewshot_items, folder_items
from coop_fast.datasets import fake_dataset
from coop_fast.export import read_prompt

torch.set_num_threads(1)  # tiny models: threads only contend
ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, 'PYTHONPATH': str(ROOT), 'HF_HUB_OFFLINE': '1', 'OMP_NUM_THREADS': '1', 'MKL_NUM_THREADS': '1'}
TINY = ['--arch', 'coop-test-vit', '--pretrained', 'random', '--n_ctx', '4', '--bs', '4', '--workers', '0', '--device', 'cpu', '--quiet']

run = run_cli  # (exit status, stdout, stderr) of `coop-fast ARGS`, run in this process

def ok(*args):
    code, out, err = run(*args)
    assert code == 0, err
    return out

def cli(*args, timeout=120):
    "`python -m coop_fast.cli ARGS` in a subprocess importing this tree"
    return subprocess.run([sys.executable, '-m', 'coop_fast.cli', *map(str, args)], capture_output=True, text=True,
                          env=ENV, cwd=ROOT, timeout=timeout)

def ctx(f): return read_prompt(f)[0]['prompt_learner.ctx']

@pytest.fixture(scope='module')
def imgs(tmp_path_factory): return fake_images(tmp_path_factory.mktemp('data')/'imgs', n=10)

def test_help_in_subprocesses():
    r = cli('--help')
    assert r.returncode == 0 and all(f'\n  {c} ' in r.stdout for c in ('train', 'eval', 'predict', 'results', 'methods', 'demo')), r.stderr
    r = cli('train', '--help')
    assert r.returncode == 0 and '--resume' in r.stdout and '--class_token_position' in r.stdout, r.stderr
    # help and argument errors are answered without importing PyTorch
    code = ("import sys, contextlib, io\nfrom coop_fast.cli import main\n"
            "with contextlib.redirect_stderr(io.StringIO()): codes = main(['eval', '--help']), main(['train', 'x', '--shots', '0'])\n"
            "print(codes, 'torch' in sys.modules)")
    r = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, env=ENV, timeout=120)
    assert r.stdout.strip().endswith('(0, 2) False'), r.stdout + r.stderr

def test_usage():
    code, out, err = run()
    assert code == 2 and 'usage: coop-fast COMMAND' in err
    assert run('--version')[1].strip() == f'coop_fast {coop_fast.__version__}'
    assert list(commands) == ['train', 'eval', 'predict', 'results', 'methods', 'demo', 'bake', 'export', 'serve', 'sweep']

def test_train_eval_predict_results(imgs, tmp_path):
    p = tmp_path/'runs/a.safetensors'
    rec = json.loads(ok('train', imgs, '--shots', 4, '--epochs', 2, '--out', p, '--json', '--plot', *[a for a in TINY if a != '--quiet']))
    assert rec == json.loads(p.with_suffix('.json').read_text())
    assert (rec['kind'], rec['command'], rec['dataset'], rec['shots'], rec['split'], rec['n']) == (result_kind, 'train', 'imgs', 4, 'test', 6)
    for s in ('.training.png', '.confusion.png', '.class_accuracy.png'): assert p.with_suffix(s).read_bytes()[:4] == b'\x89PNG'
    # eval on the training folder finds the same test split, and the same (random) CLIP: the same accuracy
    ev = json.loads(ok('eval', p, imgs, '--json', '--out', tmp_path/'runs/a_eval.json', '--device', 'cpu', '--workers', 0))
    assert (ev['accuracy'], ev['n'], ev['per_class']) == (rec['accuracy'], rec['n'], rec['per_class'])
    assert ev['trained_on'] == 'imgs' and ev['label'] == rec['label'] == 'CoOp (M=4, end)' and ev['method'] == rec['method'] == 'coop'
    text = ok('eval', p, imgs, '--split', 'all', '--device', 'cpu', '--workers', 0)
    assert 'all split, 30 images' in text and 'precision' in text
    preds = json.loads(ok('predict', p, imgs/'cat', imgs/'dog/0.jpg', '--json', '--device', 'cpu'))
    assert len(preds) == 11 and set(preds[0]) == {'file', 'class', 'probability'} and preds[0]['class'] in ('bird', 'cat', 'dog')
    # results: the train and eval records of one prompt on one test split count once
    ok('train', imgs, '--shots', 4, '--epochs', 2, '--seed', 2, '--out', tmp_path/'runs/b.safetensors', *TINY)
    table = json.loads(ok('results', tmp_path/'runs', '--json', '--csv', tmp_path/'t.csv', '--plot', tmp_path/'t.png'))
    assert [(r['dataset'], r['shots'], r['runs']) for r in table] == [('imgs', 4, 2)]
    assert abs(table[0]['accuracy_mean'] - (rec['accuracy'] + json.loads((tmp_path/'runs/b.json').read_text())['accuracy']) / 2) < 1e-9
    assert (tmp_path/'t.csv').read_text().startswith('dataset,label,shots,runs,accuracy_mean,accuracy_std')
    assert (tmp_path/'t.png').read_bytes()[:4] == b'\x89PNG'
    md = ok('results', tmp_path/'runs/a.json', tmp_path/'runs/b.json', '--by', 'label', '--ci95')
    assert md.splitlines()[0].split('|')[1:4] == [' label           ', ' runs ', ' accuracy (%) ']

def test_benchmark_dataset(tmp_path):
    root = tmp_path/'data'
    fake_dataset('OxfordPets', root, n=(3, 2, 2)); fake_dataset('ImageNetV2', root, n=(1, 1, 2))
    rec = json.loads(ok('train', 'Pets', '--root', root, '--shots', 2, '--epochs', 1, '--out', tmp_path/'pets.safetensors', '--json', *TINY))
    assert (rec['dataset'], rec['n'], len(rec['per_class'])) == ('OxfordPets', 10, 5)
    assert 'american bulldog' in read_prompt(tmp_path/'pets.safetensors')[1]['classnames']  # the paper's class names
    ev = json.loads(ok('eval', tmp_path/'pets.safetensors', 'OxfordPets', '--root', root, '--split', 'val', '--json', '--device', 'cpu', '--workers', 0))
    assert (ev['split'], ev['n']) == ('val', 10)
    # a unified context transfers to another dataset's classes
    ev = json.loads(ok('eval', tmp_path/'pets.safetensors', 'ImageNetV2', '--root', root, '--json', '--device', 'cpu', '--workers', 0))
    assert (ev['dataset'], ev['n'], len(ev['classnames'])) == ('ImageNetV2', 24, 12)
    base = json.loads(ok('train', 'OxfordPets', '--root', root, '--subsample', 'base', '--shots', 2, '--epochs', 1,
                         '--out', tmp_path/'base.safetensors', '--json', *TINY))
    assert (base['subsample'], len(base['per_class'])) == ('base', 3)

def test_same_seed_same_split_and_context(imgs, tmp_path):
    items = folder_items(imgs)[0]
    assert fewshot_items(items, 4, seed=3) == fewshot_items(items, 4, seed=3) != fewshot_items(items, 4, seed=4)
    for f in ('a', 'b'): ok('train', imgs, '--shots', 4, '--epochs', 3, '--lr', 0.01, '--seed', 3, '--out', tmp_path/f'{f}.safetensors', *TINY)
    assert torch.equal(ctx(tmp_path/'a.safetensors'), ctx(tmp_path/'b.safetensors'))
    assert read_prompt(tmp_path/'a.safetensors')[1]['summary'] == read_prompt(tmp_path/'b.safetensors')[1]['summary']

class StopAfter(Callback):
    "Interrupt the fit after epoch `k`, as Ctrl-C would, once the checkpoint is written"
    order, k = 70, 2
    def after_epoch(self):
        if self.epoch == self.k: raise KeyboardInterrupt()

@pytest.mark.parametrize('extra', [[], ['--feature_cache', '2', '--csc']])
def test_resume_ends_where_a_straight_run_ends(imgs, tmp_path, monkeypatch, extra):
    args = ['train', imgs, '--shots', 4, '--epochs', 6, '--lr', 0.02, *extra, *TINY]
    straight = json.loads(ok(*args, '--out', tmp_path/'straight.safetensors', '--json'))
    with monkeypatch.context() as m:
        m.setattr(defaults, 'callbacks', defaults.callbacks + [StopAfter])
        code, _, err = run(*args, '--out', tmp_path/'r.safetensors')
    assert code == 130 and 'interrupted' in err and '--resume' in err
    assert not (tmp_path/'r.safetensors').exists() and read_checkpoint(tmp_path/'r.ckpt.safetensors')[1]['epoch'] == 3
    code, out, err = run(*args, '--out', tmp_path/'r.safetensors', '--json', '--resume')
    assert code == 0 and 'Resuming from' in err and 'after epoch 3 of 6' in err, err
    resumed = json.loads(out)
    assert torch.equal(ctx(tmp_path/'r.safetensors'), ctx(tmp_path/'straight.safetensors'))  # bit-identical on CPU
    skip = {'prompt', 'time', 'seconds'}
    assert {k: v for k, v in resumed.items() if k not in skip} == {k: v for k, v in straight.items() if k not in skip}
    s1, s2 = (read_prompt(tmp_path/f)[1]['summary'] for f in ('r.safetensors', 'straight.safetensors'))
    assert s1 == s2 and s1['epochs'] == 6
    # resuming a finished run trains nothing and writes the same prompt again
    assert json.loads(ok(*args, '--out', tmp_path/'r.safetensors', '--json', '--resume'))['accuracy'] == straight['accuracy']
    assert torch.equal(ctx(tmp_path/'r.safetensors'), ctx(tmp_path/'straight.safetensors'))

def test_killed_subprocess_resumes(imgs, tmp_path):
    "SIGKILL a real `coop-fast train` after its first epoch; the resumed run ends with the straight run's context"
    args = ['train', imgs, '--shots', 4, '--epochs', 20, '--lr', 0.02, *TINY]
    ck, out = tmp_path/'k.ckpt.safetensors', tmp_path/'k.safetensors'
    proc = subprocess.Popen([sys.executable, '-m', 'coop_fast.cli', *map(str, args), '--out', str(out)], env=ENV, cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        t, seen = time.time(), None
        while proc.poll() is None and time.time() - t < 150:
            m = ck.stat().st_mtime_ns if ck.exists() else None
            if m != seen and m is not None and read_checkpoint(ck)[1]['epoch'] >= 1: break
            seen = m
            time.sleep(0.01)
        assert proc.poll() is None, f"the run ended before it could be killed: {proc.stderr.read()}"
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill(); proc.wait()
    done = read_checkpoint(ck)[1]['epoch']
    assert 1 <= done < 20 and not out.exists()
    ok(*args, '--out', out, '--resume')
    ok(*args, '--out', tmp_path/'straight.safetensors')
    assert torch.equal(ctx(out), ctx(tmp_path/'straight.safetensors'))

def test_demo_dispatch(monkeypatch):
    demo = types.ModuleType('coop_fast.demo')
    demo.__spec__ = importlib.machinery.ModuleSpec('coop_fast.demo', None)
    demo.demo = lambda *a, **kw: print('demo ran', a, sorted(kw.items()))
    monkeypatch.setitem(sys.modules, 'coop_fast.demo', demo)
    monkeypatch.setattr(coop_fast, 'demo', demo, raising=False)
    assert run('demo')[:2] == (0, "demo ran ('digits',) [('epochs', None), ('out', None), ('seed', 1), ('shots', 16)]\n")
    assert run('demo', '--task', 'typed', '--epochs', 3)[1].startswith("demo ran ('typed',) [('epochs', 3)")
    code, _, err = run('demo', '--epochs', 0)
    assert code == 2 and '--epochs must be a positive integer, got 0' in err

def test_demo(tmp_path):
    "The real demo, shortened to a few epochs, as `make demo` runs it: offline, task images in the cache, a loadable prompt"
    out = tmp_path/'demo/digits.safetensors'
    r = subprocess.run([sys.executable, '-m', 'coop_fast.cli', 'demo', '--epochs', '8', '--out', str(out)], capture_output=True,
                       text=True, env={**ENV, 'XDG_CACHE_HOME': str(tmp_path/'cache')}, cwd=tmp_path, timeout=300)
    assert r.returncode == 0, r.stderr
    for s in ("Zero-shot with the hand-crafted prompt 'a photo of the number {}.'", 'CoOp after training:',
              'Domain shift to digits-noisy', f'Saved the learned prompt', str(out)):
        assert s in r.stdout, (s, r.stdout)
    assert (tmp_path/'cache/coop_fast/tasks/digits/test').is_dir() and 'Traceback' not in r.stderr
    acc = lambda what: float(r.stdout.split(what)[1].split('%')[0].split()[-1])
    zs, coop = acc("'a photo of the number {}.':"), acc('CoOp after training:')
    assert 20 < zs < 70 and coop > zs, r.stdout  # learned in 8 epochs
    tensors, info = read_prompt(out)
    assert tensors['prompt_learner.ctx'].shape == (16, 64) and info['arch'] == 'coop-tiny' and info['summary']['task'] == 'digits'
    code, _, err = run('demo', '--task', 'cifar')
    assert code == 2 and "Unknown task 'cifar'" in err

def test_piped_output_has_no_bars(imgs, tmp_path):
    "Standard output piped (not a terminal): no progress bars, one plain row per epoch after the header"
    r = cli('train', imgs, '--shots', 2, '--epochs', 3, '--out', tmp_path/'p.safetensors', *[a for a in TINY if a != '--quiet'])
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert '\r' not in r.stdout and not [l for l in lines if '|' in l or '<' in l], r.stdout  # a bar: 'Epoch 1/3 : |███| 100.00% [1/1 00:00<00:00]'
    assert lines[0].split() == ['epoch', 'train_loss', 'valid_loss', 'accuracy', 'time'], lines
    assert [l.split()[0] for l in lines[1:4]] == ['0', '1', '2'] and lines[4].startswith('CoOp (M=4, end) on imgs'), lines

def test_data_warnings_once(tmp_path):
    "The data's warnings are printed once, though training makes the split twice (checked before the weights load, then with them)"
    d = fake_images(tmp_path/'few', n={'cat': 3, 'dog': 10, 'bird': 10})
    (d/'empty').mkdir()
    code, out, err = run('train', d, '--shots', 4, '--epochs', 1, '--test_pct', 0, '--out', tmp_path/'p.safetensors', *TINY)
    assert code == 0, err
    ws = [l for l in err.splitlines() if l.startswith('coop-fast: warning:')]
    assert len(ws) == 4 and len(set(ws)) == 4, err
    assert any("fewer images than shots=4" in w for w in ws) and any("'empty'" in w for w in ws), err

def test_transparent_images_on_white(imgs, tmp_path):
    "An RGBA image is predicted as the same image composited on white (training reads it the same way), not as its hidden colours"
    import numpy as np
    from PIL import Image
    ok('train', imgs, '--shots', 2, '--epochs', 1, '--out', tmp_path/'p.safetensors', *TINY)
    px = np.asarray(Image.open(imgs/'cat/0.jpg').convert('RGBA')).copy()
    px[:, : px.shape[1] // 2, 3] = 0; px[:, : px.shape[1] // 2, :3] = 0  # left half transparent, black underneath
    Image.fromarray(px, 'RGBA').save(tmp_path/'rgba.png')
    white = px.copy(); white[:, : px.shape[1] // 2, :3] = 255
    Image.fromarray(white[..., :3]).save(tmp_path/'white.png')
    Image.fromarray(px[..., :3]).save(tmp_path/'black.png')
    probs = {n: json.loads(ok('predict', tmp_path/'p.safetensors', tmp_path/f'{n}.png', '--probs', '--json', '--device', 'cpu'))[0]
             for n in ('rgba', 'white', 'black')}
    cls = ['bird', 'cat', 'dog']
    assert all(abs(probs['rgba'][c] - probs['white'][c]) < 1e-6 for c in cls), probs
    assert max(abs(probs['rgba'][c] - probs['black'][c]) for c in cls) > 1e-4, probs  # the test can tell them apart
