"""A baked head outside coop_fast's training stack: in a process where fastai cannot be imported, the head file is used
with plain safetensors + open_clip + torch, and with `coop_fast.deploy`'s load path; the logits are the CoOpModel's."""
import json, os, subprocess, sys, textwrap
from pathlib import Path
import pytest, torch
from safetensors.torch import save_file, load_file

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, 'PYTHONPATH': str(ROOT), 'HF_HUB_OFFLINE': '1', 'OMP_NUM_THREADS': '1'}

# a meta-path finder that makes `import fastai` (and its submodules) fail, first on `sys.meta_path`
BLOCK = """
import sys, importlib.abc
class NoFastai(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == 'fastai' or name.startswith('fastai.'): raise ImportError(f"{name} is blocked in this test")
sys.meta_path.insert(0, NoFastai())
try: import fastai
except ImportError: pass
else: raise SystemExit('the blocker does not block fastai')
"""

PLAIN = """
import json, torch, open_clip
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from PIL import Image
head, cfg_dir, weights, out, *images = sys.argv[1:]
t = load_file(head)
with safe_open(head, 'pt') as f: info = json.loads(f.metadata()['coop_fast'])
open_clip.add_model_config(cfg_dir)
p = info['preprocess']
clip = open_clip.create_model(info['arch'], pretrained=weights).eval()
tfm = open_clip.image_transform(p['size'], is_train=False, mean=p['mean'], std=p['std'], resize_mode=p['resize_mode'],
                                interpolation=p['interpolation'])
x = torch.stack([tfm(Image.open(f).convert('RGB')) for f in images])
with torch.no_grad(): logits = t['logit_scale'] * clip.encode_image(x, normalize=True) @ t['classifier']
save_file({'logits': logits}, out)
assert not any(m == 'fastai' or m.startswith(('fastai.', 'coop_fast')) for m in sys.modules), 'fastai or coop_fast was imported'
"""

DEPLOY = """
import torch
from PIL import Image
from safetensors.torch import save_file
from coop_fast.deploy import load_head, head_clip, head_tfm, ImageClassifier
head, out, *images = sys.argv[1:]
h = load_head(head)
model = ImageClassifier(head_clip(h, device='cpu'), h).eval()
x = torch.stack([head_tfm(h)(Image.open(f).convert('RGB')) for f in images])
with torch.no_grad(): probs, logits = model(x)
save_file({'logits': logits, 'probs': probs}, out)
assert not any(m == 'fastai' or m.startswith('fastai.') for m in sys.modules), 'fastai was imported'
print(h.classnames[int(logits[0].argmax())])
"""

def _run(code, *args):
    r = subprocess.run([sys.executable, '-c', BLOCK + textwrap.dedent(code), *map(str, args)], capture_output=True, text=True,
                       env=ENV, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout

@pytest.fixture(scope='module')
def baked(tmp_path_factory):
    "A CoOp prompt (random context) on coop-tiny, baked; images of coop-tiny's digits task; the CoOpModel's logits on them"
    from coop_fast.clip import load_clip
    from coop_fast.prompt import CoOpModel
    from coop_fast.export import save_prompt, eval_tfm, open_image
    from coop_fast.deploy import bake, save_head
    from coop_fast.tiny.tasks import make_task, tasks
    d = tmp_path_factory.mktemp('deploy')
    task = make_task('digits', d/'tasks')
    model = CoOpModel(load_clip('coop-tiny', device='cpu'), list(tasks['digits'].classnames), n_ctx=4).eval()
    head = save_head(bake(save_prompt(model, d/'p.safetensors')), d/'head.safetensors')
    images = [sorted((task/'test'/c).glob('*.png'))[i] for c in ('seven', 'two', 'zero') for i in range(2)]
    with torch.no_grad(): want = model(torch.stack([eval_tfm(model)(open_image(f)) for f in images]))
    return head, images, want, model

def test_head_without_coop_fast(baked, tmp_path):
    "safetensors + open_clip + torch alone, fastai blocked and coop_fast not imported: the CoOpModel's logits"
    from coop_fast.clip import clip_weights
    head, images, want, model = baked
    weights = clip_weights[('coop-tiny', 'v1')]['file']
    _run(PLAIN, head, ROOT/'coop_fast'/'model_configs', weights, tmp_path/'plain.safetensors', *images)
    got = load_file(tmp_path/'plain.safetensors')['logits']
    scale = model.clip.logit_scale.exp().item()
    assert (got - want).abs().max() <= 8 * scale * 64 ** 0.5 * 2 ** -23, (got - want).abs().max()  # float32 rounding

def test_head_with_deploy_load_path(baked, tmp_path):
    "`coop_fast.deploy.load_head` + `ImageClassifier`, fastai blocked: the CoOpModel's logits and probabilities"
    head, images, want, model = baked
    top = _run(DEPLOY, head, tmp_path/'deploy.safetensors', *images).strip()
    got = load_file(tmp_path/'deploy.safetensors')
    assert (got['logits'] - want).abs().max() <= 8 * model.clip.logit_scale.exp().item() * 64 ** 0.5 * 2 ** -23
    assert (got['probs'] - want.softmax(-1)).abs().max() <= 1e-6
    assert top == model.classnames[int(want[0].argmax())]

def test_bake_needs_fastai_and_says_so(baked):
    "Baking (unlike using a head) needs coop_fast's training install: with fastai blocked, `bake` fails on the import"
    r = subprocess.run([sys.executable, '-c', BLOCK + "from coop_fast.deploy import bake\nbake(sys.argv[1])", str(baked[0].with_name('p.safetensors'))],
                       capture_output=True, text=True, env=ENV, timeout=600)
    assert r.returncode != 0 and 'ImportError: fastai' in r.stderr and 'blocked' in r.stderr, r.stderr[-2000:]

# The deploy tutorial's plain-open_clip code (nbs/24_tutorial_deploy.ipynb), run as it is written on a head of every method
def _tutorial_snippet() -> str:
    nb = json.loads((ROOT/'nbs'/'24_tutorial_deploy.ipynb').read_text())
    cells = [''.join(c['source']) for c in nb['cells'] if 'load_file(head_file)' in ''.join(c['source'])]
    assert len(cells) == 1, f"{len(cells)} cells of the deploy tutorial use the head file with plain open_clip"
    return cells[0]

def _candidates() -> list:
    "Every method whose kind may bake (the conditional and deep ones are refused by name: `15_deploy` tests that)"
    import coop_fast.all  # noqa: F401 (registers every method)
    from coop_fast.methods import list_methods
    from coop_fast.deploy import bake_refusal
    return [m for m in list_methods() if bake_refusal(m) is None]

@pytest.fixture(scope='module')
def digits(tmp_path_factory):
    from coop_fast.tiny.tasks import make_task
    return make_task('digits', tmp_path_factory.mktemp('snippet')/'tasks')

@pytest.mark.parametrize('method', _candidates())
def test_tutorial_snippet_gives_predicts_classes(method, digits, tmp_path):
    """Each method trained briefly on coop-tiny with `coop-fast train`, baked with `coop-fast bake` (or refused, for a head
    that is not linear), then the tutorial's plain-open_clip code, exactly as written: `predict`'s classes and probabilities.
    For a head with a bias (GDA's), leaving the bias out would not: the check can fail."""
    from coop_fast.cli import run_cli
    from coop_fast.export import load_prompt, predict
    from safetensors.torch import load_file
    prompt, head_file = tmp_path/f'{method}.safetensors', tmp_path/'head.safetensors'
    code, _, err = run_cli('train', digits, '--method', method, '--arch', 'coop-tiny', '--shots', '2', '--epochs', '1',
                           '--out', prompt, '--quiet', '--workers', '0', '--device', 'cpu', '--threads', '1')
    assert code == 0, err
    code, out, err = run_cli('bake', prompt, '--out', head_file, '--device', 'cpu')
    if code != 0:  # Tip-Adapter's cache and CLIP-Adapter's bottleneck are not linear in the image feature
        assert code == 2 and 'its classifier is not linear in the image feature' in err, err
        return
    t = load_file(head_file)
    if 'logit_bias' in t: assert 'logit bias' in out and '+ logit_bias' in out and 'add the bias' in out, out
    else: assert 'Logits: logit_scale * normalize(f) @ classifier, f the image features.' in out, out
    ns = dict(head_file=head_file, REAL_CLIP=False, task=digits, Path=Path, torch=torch)
    exec(_tutorial_snippet(), ns)
    model = load_prompt(prompt, device='cpu')
    preds = [predict(model, f) for f in ns['images']]
    assert [ns['info']['classnames'][i] for i in ns['probs'].argmax(-1)] == [p.label for p in preds], method
    want = torch.stack([p.probs for p in preds])
    assert (ns['probs'] - want).abs().max() <= 1e-5, (method, (ns['probs'] - want).abs().max())
    if 'logit_bias' in t:
        without = (t['logit_scale'] * ns['image_features'] @ t['classifier']).softmax(-1)
        assert (without - want).abs().max() > 1e-2, method  # the bias changes the scores: the check above sees it
