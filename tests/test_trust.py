"Numbers a user can trust (issues 11, 23): the seed alone fixes the data pipeline; the same seed and threads give the same prompt; results tables pool only runs that differ in nothing but their seed."
import json
from pathlib import Path
import pytest, torch
from coop_fast.cli import run_cli
from fastai.torch_core import set_seed
from fasttransform import Pipeline
from coop_fast.clip import load_clip
from coop_fast.data import fake_images, fewshot_dls
from coop_fast.experiments import result_record
from coop_fast.export import read_prompt

torch.set_num_threads(1)
TINY = ['--arch', 'coop-test-vit', '--pretrained', 'random', '--n_ctx', '4', '--bs', '4', '--device', 'cpu', '--quiet']

run = run_cli  # (exit status, stdout, stderr) of `coop-fast ARGS`, run in this process

def _batches(imgs, workers, threads, epochs=2):
    "The few-shot sample and every training batch of `epochs` passes, as uint8 pixels, with `workers` and `threads`"
    torch.set_num_threads(threads)
    try:
        set_seed(1)
        dls = fewshot_dls(imgs, load_clip('coop-test-vit'), shots=4, bs=4, num_workers=workers)
        dl = dls.train
        dl.after_batch = Pipeline([])  # the pixels before IntToFloatTensor and Normalize
        return dl.items, [(x.clone(), y.clone()) for _ in range(epochs) for x, y in dl]
    finally: torch.set_num_threads(1)

def test_data_pipeline_depends_on_the_seed_alone(tmp_path):
    "The sample, every random crop and flip and the batch order: bit for bit the same with any workers and threads"
    imgs = fake_images(tmp_path/'imgs', n=10)
    runs = {(w, t): _batches(imgs, w, t) for w, t in [(0, 1), (2, 1), (0, 2), (2, 2)]}
    items, bs = runs[0, 1]
    assert len(bs) == 6 and bs[0][0].dtype == torch.uint8, (len(bs), bs[0][0].dtype)
    assert not torch.equal(bs[0][0], bs[3][0])  # the second pass crops and orders anew
    for k, (its, b) in runs.items():
        assert its == items and len(b) == len(bs), k
        assert all(torch.equal(x, x0) and torch.equal(y, y0) for (x, y), (x0, y0) in zip(b, bs)), k

def _train(imgs, f, workers, threads):
    "The context and test accuracy of a 3-epoch CoOp run with `workers` and `threads`"
    code, _, err = run('train', imgs, '--shots', 4, '--epochs', 3, '--lr', 0.01, '--workers', workers,
                       '--threads', threads, '--out', f, *TINY)
    assert code == 0, err
    return read_prompt(f)[0]['prompt_learner.ctx'], json.loads(f.with_suffix('.json').read_text())['accuracy']

def test_same_seed_same_prompt(tmp_path):
    """The same seed and threads: the same context bit for bit, with any workers (the batches are the same, and so is
    every sum). Other threads split PyTorch's sums otherwise: the context then agrees to float rounding."""
    imgs = fake_images(tmp_path/'imgs', n=10)
    runs = {k: _train(imgs, tmp_path/f'p{i}.safetensors', *k[:2]) for i, k in enumerate([(0, 1), (0, 1, 'again'), (2, 1), (0, 2)])}
    ctx, acc = runs[0, 1]
    for k in [(0, 1, 'again'), (2, 1)]: assert torch.equal(runs[k][0], ctx) and runs[k][1] == acc, k
    assert torch.get_num_threads() == 1  # the command put PyTorch's threads back
    # a bound from the arithmetic: each of the 9 SGD steps (12 images, batch 4, 3 epochs) rounds sums of at most
    # n = 128 float32 terms (the text MLP's 4 x 32 units) in another order: at most n * 2**-24 of the values each step
    steps, n = 9, 128
    tol = steps * n * 2 ** -24 * ctx.abs().max().item()
    d = (runs[0, 2][0] - ctx).abs().max().item()
    assert d <= tol, (d, tol)

def _rec(folder, name, seed, acc, **kw):
    "Write a result record of a CoOp run to `folder/name.json`"
    r = result_record(**{**dict(command='train', method='coop', label='CoOp (M=16, end)', dataset='pets', split='test', shots=4,
                                seed=seed, epochs=100, lr=0.002, n_ctx=16, accuracy=acc, macro_f1=acc,
                                prompt=str(folder/f'{name}.safetensors')), **kw})
    (folder/f'{name}.json').write_text(json.dumps(r))

BASE = ['--arch', 'coop-test-vit', '--pretrained', 'random', '--bs', '4', '--workers', '0', '--device', 'cpu', '--quiet']

def _fit(imgs, out, method, *args):
    "Train `method` on `imgs` for one epoch into prompt file `out`: its result record"
    code, _, err = run('train', imgs, '--method', method, '--shots', 2, '--epochs', 1, '--out', out, *args, *BASE)
    assert code == 0, err
    return json.loads(out.with_suffix('.json').read_text())

def test_results_pool_only_identical_settings(tmp_path):
    "Three copies of one seed-1 run and two runs with other settings: not '5 runs, mean ± std', but three rows of one run, said so"
    for i in range(3): _rec(tmp_path, f'copy{i}', 1, 0.30)
    _rec(tmp_path, 'short', 2, 0.25, epochs=10)
    _rec(tmp_path, 'fast', 3, 0.27, lr=0.01)
    code, out, err = run('results', tmp_path, '--json')
    assert code == 0, err
    rows = json.loads(out)
    assert [(r['epochs'], r['lr'], r['runs'], round(r['accuracy_mean'], 2)) for r in rows] == [(10, 0.002, 1, 0.25), (100, 0.002, 1, 0.30),
                                                                                                (100, 0.01, 1, 0.27)], rows
    assert 'differ in epochs, lr: they get separate rows' in err and '2 record(s) repeat the seed of a run with the same settings' in err, err

def test_results_distinct_seeds_pool(tmp_path):
    "Runs that differ only in their seed pool into one row; the spread is over the seeds"
    for s, acc in zip((1, 2, 3), (0.5, 0.6, 0.7)): _rec(tmp_path, f's{s}', s, acc)
    code, out, err = run('results', tmp_path, '--json')
    rows = json.loads(out)
    assert code == 0 and len(rows) == 1 and rows[0]['runs'] == 3 and 'warning' not in err, (rows, err)
    assert rows[0]['accuracy_mean'] == pytest.approx(0.6) and rows[0]['accuracy_std'] == pytest.approx(0.1)  # the sample std over the seeds

def test_results_ci95_is_a_t_interval(tmp_path):
    "--ci95 at 3 seeds is t(0.975, 2) = 4.303 times the sample std / sqrt(3), not 1.96 times the population std; a single run shows no spread"
    for s, acc in zip((1, 2, 3), (0.5, 0.6, 0.7)): _rec(tmp_path, f's{s}', s, acc)
    _rec(tmp_path, 'one', 1, 0.473, shots=8)
    code, out, err = run('results', tmp_path, '--json', '--ci95')
    rows = json.loads(out)
    assert code == 0 and [r['runs'] for r in rows] == [3, 1], (rows, err)
    assert rows[0]['accuracy_ci95'] == pytest.approx(4.303 * 0.1 / 3 ** 0.5, abs=1e-4) and rows[1]['accuracy_ci95'] is None, rows
    code, md, err = run('results', tmp_path, '--ci95')
    three, one = md.splitlines()[2:]
    assert '| 60.0 ± 24.8 ' in three and '| 47.3 ' in one and '±' not in one, md
    code, out, err = run('results', '--help')
    assert "Student's t 95% confidence interval" in ' '.join(out.split()), out

def test_results_unset_setting_is_its_own_value(tmp_path):
    "CoOp runs without a feature cache (recorded null) and with --feature_cache 0, seeds overlapping: two rows, neither's seed called a repeat of the other's"
    imgs, runs = fake_images(tmp_path/'imgs', n=6), tmp_path/'runs'
    for seed in (1, 2):
        assert _fit(imgs, runs/f'aug{seed}.safetensors', 'coop', '--n_ctx', 2, '--seed', seed)['feature_cache'] is None
        assert _fit(imgs, runs/f'cached{seed}.safetensors', 'coop', '--n_ctx', 2, '--seed', seed, '--feature_cache', 0)['feature_cache'] == 0
    code, out, err = run('results', runs, '--json')
    rows = json.loads(out)
    assert code == 0 and [(r['feature_cache'], r['runs']) for r in rows] == [(0.0, 2), (None, 2)], (rows, err)
    assert 'differ in feature_cache' in err and 'repeat the seed' not in err, err
    for name in ('aug1', 'aug2', 'cached1', 'cached2'):  # their eval records (on all images) carry the run's setting too
        code, _, err = run('eval', runs/f'{name}.safetensors', imgs, '--split', 'all', '--out', tmp_path/'evals'/f'{name}.json',
                           '--workers', 0, '--device', 'cpu')
        assert code == 0, err
    code, out, err = run('results', tmp_path/'evals', '--json')
    rows = json.loads(out)
    assert code == 0 and [(r['feature_cache'], r['runs']) for r in rows] == [(0.0, 2), (None, 2)], (rows, err)

def test_training_free_and_zero_shot_records(tmp_path):
    "A training-free method records 0 epochs in its train and eval records alike (they pool: 2 seeds, an eval of one prompt counted once); zero-shot CLIP records 0 shots"
    imgs, runs = fake_images(tmp_path/'imgs', n=6), tmp_path/'runs'
    recs = [_fit(imgs, runs/f'tip{s}.safetensors', 'tip-adapter', '--seed', s) for s in (1, 2)]
    code, _, err = run('eval', runs/'tip1.safetensors', imgs, '--out', runs/'tip1.eval.json', '--workers', 0, '--device', 'cpu')
    assert code == 0, err
    ev = json.loads((runs/'tip1.eval.json').read_text())
    assert [r['epochs'] for r in recs] + [ev['epochs']] == [0, 0, 0], (recs, ev)
    assert {k: ev[k] for k in ('views', 'init_beta', 'shots')} == {k: recs[0][k] for k in ('views', 'init_beta', 'shots')}
    code, out, err = run('results', runs, '--json')
    rows = json.loads(out)
    assert code == 0 and [(r['label'], r['shots'], r['runs']) for r in rows] == [('Tip-Adapter', 2, 2)], (rows, err)
    assert 'differ in' not in err, err
    zs = _fit(imgs, runs/'zs.safetensors', 'zeroshot')
    assert (zs['shots'], zs['epochs']) == (0, 0), zs
    from safetensors import safe_open  # the metadata alone: today's read_prompt refuses a file without tensors
    with safe_open(runs/'zs.safetensors', 'pt') as f: assert json.loads(f.metadata()['coop_fast'])['summary']['shots'] == 0

def test_train_reports_a_class_absent_from_the_test_set(tmp_path):
    "A test/ folder lacking one of train/'s classes: that class is reported absent, not scored as 0% into macro-F1"
    fake_images(tmp_path/'d'/'train', classes=('cat', 'dog', 'bird'), n=6)
    fake_images(tmp_path/'d'/'test', classes=('cat', 'dog'), n=3, seed=1)
    f = tmp_path/'p.safetensors'
    code, out, err = run('train', tmp_path/'d', '--shots', 4, '--epochs', 1, '--workers', 0, '--out', f, '--json', *TINY)
    assert code == 0, err
    rec = json.loads(out)
    assert rec['split'] == 'test' and rec['n'] == 6 and rec['absent'] == ['bird'], rec
    assert set(rec['per_class']) == {'cat', 'dog'}, rec['per_class']

def test_hp_sweep_gives_a_row_per_value(tmp_path):
    "The hand check of issue 24: records of a --hp sweep (KgCoOp lam=0.5 and 8, Tip-Adapter-F views=0 and 1, two seeds each) give one row per value, not one mean ± std"
    imgs, runs = fake_images(tmp_path/'imgs', n=6), tmp_path/'runs'
    for method, hp in [('kgcoop', 'lam=0.5'), ('kgcoop', 'lam=8'), ('tip-adapter-f', 'views=0'), ('tip-adapter-f', 'views=1')]:
        for seed in (1, 2):
            rec = _fit(imgs, runs/f'{method}_{hp}_{seed}.safetensors', method, '--hp', hp, '--seed', seed)
            k, v = hp.split('=')
            assert rec[k] == float(v), rec  # recorded by name
            assert read_prompt(runs/f'{method}_{hp}_{seed}.safetensors')[1]['summary']['hp'][k] == float(v)
    code, out, err = run('results', runs, '--json')
    assert code == 0, err
    rows = sorted((r['label'], r['runs']) for r in json.loads(out))
    assert rows == [('KgCoOp (M=4, end, init "a photo of a")', 2), ('KgCoOp (M=4, end, init "a photo of a"), lam=0.5', 2),
                    ('Tip-Adapter-F, views=0', 2), ('Tip-Adapter-F, views=1', 2)], rows
    assert 'repeat the seed' not in err, err
