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
    assert rows[0]['accuracy_mean'] == pytest.approx(0.6) and rows[0]['accuracy_std'] == pytest.approx(torch.tensor([.5, .6, .7]).std(unbiased=False).item())

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
