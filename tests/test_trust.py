"Numbers a user can trust (issue 11): the same seed gives the same prompt with any number of workers and threads; results tables pool only runs that differ in nothing but their seed."
import json
from pathlib import Path
import pytest, torch
from coop_fast.cli import run_cli
from coop_fast.data import fake_images
from coop_fast.experiments import result_record
from coop_fast.export import read_prompt

torch.set_num_threads(1)
TINY = ['--arch', 'coop-test-vit', '--pretrained', 'random', '--n_ctx', '4', '--bs', '4', '--device', 'cpu', '--quiet']

run = run_cli  # (exit status, stdout, stderr) of `coop-fast ARGS`, run in this process

def test_same_seed_any_workers_and_threads(tmp_path):
    "The sample, the augmented crops and flips, and the batch order depend on the seed alone: the same context, bit for bit"
    imgs = fake_images(tmp_path/'imgs', n=10)
    ctxs, accs = {}, {}
    for workers, threads in [(0, 1), (2, 1), (0, 2)]:
        f = tmp_path/f'p{workers}{threads}.safetensors'
        code, _, err = run('train', imgs, '--shots', 4, '--epochs', 3, '--lr', 0.01, '--workers', workers, '--threads', threads,
                           '--out', f, *TINY)
        assert code == 0, err
        ctxs[workers, threads] = read_prompt(f)[0]['prompt_learner.ctx']
        accs[workers, threads] = json.loads(f.with_suffix('.json').read_text())['accuracy']
    for k in ctxs: assert torch.equal(ctxs[k], ctxs[0, 1]) and accs[k] == accs[0, 1], k
    assert torch.get_num_threads() == 1  # the command put PyTorch's threads back

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
