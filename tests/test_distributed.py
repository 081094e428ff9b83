"""DDP on CPU: two processes (torchrun, gloo, 127.0.0.1) reach the context of one process with the same global batch,
with and without the image-feature cache, on a ViT and a ResNet CLIP; DDP synchronises the context only; the frozen CLIP,
the cache, a non-finite loss and the prompt file behave under it."""
from pathlib import Path
import pytest, torch
from coop_fast.export import read_prompt
from ddp_utils import ddp_results

SCRIPT = Path(__file__).parent/'ddp_train.py'
CASES = ('vit', 'vit_cache', 'rn', 'vit_views')
T = torch.tensor

@pytest.fixture(scope='module')
def ddp(tmp_path_factory):
    "Results of both ranks (rank 0 also holds the one-process references `ref_*`), and the output folder"
    d = tmp_path_factory.mktemp('ddp')
    return ddp_results(SCRIPT, d), d

def _diff(a, b): return (T(a) - T(b)).abs().max().item()

@pytest.mark.parametrize('case', CASES)
def test_same_context_as_one_process(ddp, case):
    (r0, r1), _ = ddp
    a, b, ref = r0[case], r1[case], r0[f'ref_{case}']
    assert a['summary'] == b['summary'] == ref['summary'] == dict(epochs=3, iterations=6, stopped=None)
    assert _diff(a['ctx'], b['ctx']) == 0  # DDP keeps the processes identical
    tol = 1e-5 * T(ref['ctx']).abs().max().item()
    assert _diff(a['ctx'], ref['ctx']) <= tol
    assert _diff(ref['ctx'], ref['ctx0']) > 1000 * tol  # the context did move

def test_other_batches_differ(ddp):
    "The comparison has teeth: one process drawing other global batches (same data, same steps) ends elsewhere"
    (r0, _), _ = ddp
    assert _diff(r0['vit']['ctx'], r0['ref_vit_plain']['ctx']) > 1e-2 * T(r0['ref_vit']['ctx']).abs().max().item()

@pytest.mark.parametrize('case', CASES)
def test_ddp_syncs_context_only(ddp, case):
    for r in ddp[0]:
        assert r[case]['spy'] == dict(wrapper='DistributedDataParallel', synced=['prompt_learner.ctx'], buffers=0, sync_buffers=False)
        assert r[case]['model'] == 'CoOpModel' and not r[case]['ignore_left']  # unwrapped and cleaned up after the fit
    assert ddp[0][0][f'ref_{case}']['spy'] == dict(wrapper='CoOpModel')

@pytest.mark.parametrize('case', CASES)
def test_validation_text_features_cached(ddp, case):
    "The text tower runs once per validation pass (3 epochs), as in one process"
    for r in ddp[0]: assert r[case]['text_evals'] == ddp[0][0][f'ref_{case}']['text_evals'] == 3

def test_frozen_resnet_untouched(ddp):
    "No SyncBatchNorm conversion, no frozen weight or BatchNorm statistic changed"
    for r in ddp[0]:
        assert r['rn']['modules'] == ['BatchNorm2d', 'LayerNorm']
        assert all(r[c]['frozen_same'] for c in CASES)

@pytest.mark.parametrize('case', ('vit_cache', 'vit_views'))
def test_feature_cache_sharded(ddp, case):
    "Each process encodes its half of the images; all hold the same cache, that of one process"
    (r0, r1), _ = ddp
    ref = r0[f'ref_{case}']
    assert r0[case]['encoded'] == r1[case]['encoded'] == ref['encoded'] // 2
    assert r0[case]['cache'] == r1[case]['cache'] and r0[case]['valid_cache'] == r1[case]['valid_cache']
    assert T(r0[case]['cache']).shape == T(ref['cache']).shape == ((2 if case == 'vit_views' else 1), 16, 32)
    assert _diff(r0[case]['cache'], ref['cache']) < 1e-5 and _diff(r0[case]['valid_cache'], ref['valid_cache']) < 1e-5

def test_nonfinite_loss_stops_every_process(ddp):
    "Rank 1's loss is NaN at its second step: both processes stop there (none waits for ever), with the same context"
    (r0, r1), _ = ddp
    for r in (r0, r1): assert r['nan']['summary']['iterations'] == 1 and 'not finite' in r['nan']['summary']['stopped']
    assert _diff(r0['nan']['ctx'], r1['nan']['ctx']) == 0
    assert 'The loss of another process is not finite: every process stops.' in r0['nan']['warnings']

def test_different_clip_refused(ddp):
    for r in ddp[0]:
        assert 'The frozen model differs between processes: rank 1 and rank 0 hold different clip.visual.conv1.weight' in r['mismatch']['error']

def test_prompt_written_once(ddp):
    (r0, r1), d = ddp
    f = d/'prompts'/'p.safetensors'
    assert r0['saved']['path'] == r1['saved']['path'] == str(f)
    assert len(r0['saved']['writes']) == 1 and r1['saved']['writes'] == []
    assert sorted(p.name for p in f.parent.iterdir()) == ['p.safetensors']
    tensors, info = read_prompt(f)
    assert torch.equal(tensors['prompt_learner.ctx'], T(r0['saved']['ctx'])) and info['summary']['epochs'] == 1
