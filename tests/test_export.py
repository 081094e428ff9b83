"Prompt files: bad files and bad input give one clear message; saves are atomic; loading never unpickles."
import json, os, pickle, warnings
from pathlib import Path
import pytest, torch
from safetensors.torch import save_file
import coop_fast.export as ex
from coop_fast.clip import load_clip
from coop_fast.prompt import CoOpModel
from coop_fast.export import save_prompt, read_prompt, load_prompt, predict, prompt_format

@pytest.fixture(scope='module')
def clip(): return load_clip('coop-test-vit', device='cpu')

@pytest.fixture
def saved(clip, tmp_path):
    "A saved unified prompt, its model and its metadata"
    m = CoOpModel(clip, ['cat', 'dog', 'sea_lion'], n_ctx=4)
    f = save_prompt(m, tmp_path/'p.safetensors', dict(shots=1))
    return f, m, read_prompt(f)[1]

def _write(path, ctx, info, fmt=prompt_format, name='prompt_learner.ctx'):
    "A safetensors file with context `ctx` and coop_fast metadata `info` (bypassing every check)"
    meta = {'format': fmt, 'coop_fast': info if isinstance(info, str) else json.dumps(info)}
    save_file({name: ctx.contiguous()}, path, metadata=meta)
    return path

def _changed(info, **kw):
    info = {**info, **kw}
    return {k: v for k, v in info.items() if v is not ...}

def top(**kw): return lambda info: _changed(info, **kw)
def cfg(**kw): return lambda info: {**info, 'config': _changed(info['config'], **kw)}

# (what to change, message expected) for files with valid safetensors but bad coop_fast metadata or context
bad_meta = [
    (top(method=...), "its metadata lacks method"),
    (top(classnames=..., width=...), "its metadata lacks width, classnames"),
    (top(method='copo'), "it was written by Unknown method 'copo'; did you mean 'coop'?"),
    (top(config='n_ctx=4'), "invalid metadata config='n_ctx=4'"),
    (top(width=True), "invalid metadata width=True"),
    (top(classnames=[]), "invalid class names: `classnames` is empty"),
    (top(classnames=['cat', 'dog', 'cat']), "invalid class names: Duplicate class names"),
    (top(classnames='cat dog sea_lion'), "invalid metadata classnames='cat dog sea_lion'"),
    (cfg(n_ctx='4'), "n_ctx must be an integer >= 1, got '4'"),
    (cfg(csc='no'), "csc must be True or False, got 'no'"),
    (cfg(n_ctx=0), "n_ctx must be an integer >= 1, got 0"),
    (cfg(class_token_position='back'), "class_token_position must be one of"),
    (cfg(colour='red'), "its coop settings do not fit"),
    (cfg(n_ctx=5), "prompt_learner.ctx (4, 32) (needs (5, 32))"),
    (cfg(csc=True), "(needs (3, 4, 32))"),
    (top(format_version=99, version='9.0'), "it has format version 99, written by coop_fast 9.0"),
]

@pytest.mark.parametrize('change,msg', bad_meta)
def test_bad_metadata(saved, tmp_path, clip, change, msg):
    f, m, info = saved
    g = _write(tmp_path/'bad.safetensors', m.prompt_learner.ctx.detach(), change(info))
    with pytest.raises(ValueError) as e: load_prompt(g, clip)
    assert msg in str(e.value) and str(g) in str(e.value), str(e.value)

def test_bad_context(saved, tmp_path, clip):
    f, m, info = saved
    ctx = m.prompt_learner.ctx.detach().clone()
    ctx[1, 3] = float('nan')
    with pytest.raises(ValueError, match=r'its tensor prompt_learner.ctx has non-finite values'): load_prompt(_write(tmp_path/'n.safetensors', ctx, info), clip)
    with pytest.raises(ValueError, match=r'its tensor prompt_learner.ctx has dtype torch.int64'):
        load_prompt(_write(tmp_path/'i.safetensors', torch.zeros(4, 32, dtype=torch.long), info), clip)
    with pytest.raises(ValueError, match=r"CoOpModel holds tensors \['prompt_learner.ctx'\]; got \['other'\]"):
        load_prompt(_write(tmp_path/'o.safetensors', ctx.nan_to_num(), info, name='other'), clip)
    with pytest.raises(ValueError, match=r'its coop_fast metadata is not valid JSON'):
        load_prompt(_write(tmp_path/'j.safetensors', ctx.nan_to_num(), '{"n_ctx": 4,'), clip)
    with pytest.raises(ValueError, match=r'without coop_fast prompt metadata'):
        load_prompt(_write(tmp_path/'f.safetensors', ctx.nan_to_num(), info, fmt='other'), clip)

def test_version_1_file(saved, tmp_path, clip):
    "A prompt file as coop_fast 0.1 wrote it (format version 1: CoOp's context as 'ctx', its settings at the top) loads as CoOp"
    f, m, info = saved
    v1 = {k: v for k, v in info.items() if k not in ('method', 'config')}
    v1.update(format_version=1, **info['config'])
    m1 = load_prompt(_write(tmp_path/'v1.safetensors', m.prompt_learner.ctx.detach(), v1, name='ctx'), clip)
    assert type(m1) is CoOpModel and m1.config() == m.config() and torch.equal(m1.prompt_learner.ctx, m.prompt_learner.ctx)
    with pytest.raises(ValueError, match="n_ctx must be an integer >= 1, got 0"):
        load_prompt(_write(tmp_path/'v1b.safetensors', m.prompt_learner.ctx.detach(), {**v1, 'n_ctx': 0}, name='ctx'), clip)

@pytest.mark.parametrize('content,msg', [
    (b'', 'it is not a safetensors file (empty, truncated, or another format)'),
    (b'\x05\x00', 'it is not a safetensors file (empty, truncated, or another format)'),
    (b'hello world, this is text', 'it is not a safetensors file (empty, truncated, or another format)'),
    (b'\x10\x00\x00\x00\x00\x00\x00\x00not json at all!', 'it is not a safetensors file'),
    (b'\x10\x00\x00\x00\x00\x00\x00\x00{not json at all', 'its header is not JSON'),
    (b'\x02\x00\x00\x00\x00\x00\x00\x00[]', 'it is not a safetensors file'),
    (pickle.dumps({'ctx': [0.0]}), 'it is a Python pickle'),
    (pickle.dumps({'ctx': [0.0]}, protocol=0), 'it is not a safetensors file'),
])
def test_not_safetensors(tmp_path, clip, content, msg):
    (tmp_path/'x.safetensors').write_bytes(content)
    with pytest.raises(ValueError) as e: load_prompt(tmp_path/'x.safetensors', clip)
    assert msg in str(e.value)

def test_truncated(saved, tmp_path, clip):
    f, m, info = saved
    b = f.read_bytes()
    for n in (len(b) - 1, len(b) - 64, 100, 9):
        (tmp_path/'cut.safetensors').write_bytes(b[:n])
        with pytest.raises(ValueError, match=r'(truncated or corrupt|not a safetensors file|header is not JSON)'):
            load_prompt(tmp_path/'cut.safetensors', clip)

class Evil:
    "Unpickling this creates the marker file"
    def __init__(self, marker): self.marker = marker
    def __reduce__(self): return (Path.touch, (self.marker,))

def test_pickles_never_run(tmp_path, clip):
    marker = tmp_path/'marker'
    (tmp_path/'a.safetensors').write_bytes(pickle.dumps(Evil(marker)))
    torch.save({'ctx': Evil(marker)}, tmp_path/'b.pt')
    torch.save(Evil(marker), tmp_path/'c.safetensors', _use_new_zipfile_serialization=False)
    for name, msg in (('a.safetensors', 'it is a Python pickle'), ('b.pt', 'it is a zip archive'), ('c.safetensors', 'Python pickle')):
        with pytest.raises(ValueError, match='never unpickles'): load_prompt(tmp_path/name, clip)
        with pytest.raises(ValueError, match=msg): read_prompt(tmp_path/name)
    assert not marker.exists()
    pickle.loads((tmp_path/'a.safetensors').read_bytes())  # the files are really harmful: unpickling runs the code
    assert marker.exists()

def test_load_uses_no_pickle(saved, clip, monkeypatch):
    def boom(*a, **k): raise AssertionError('unpickling called')
    for mod, name in ((pickle, 'load'), (pickle, 'loads'), (torch, 'load')): monkeypatch.setattr(mod, name, boom)
    f, m, info = saved
    assert torch.equal(load_prompt(f, clip).prompt_learner.ctx, m.prompt_learner.ctx)

def test_missing_and_folder(tmp_path, clip):
    with pytest.raises(FileNotFoundError, match='No prompt file'): load_prompt(tmp_path/'none.safetensors', clip)
    with pytest.raises(ValueError, match='is a folder, not a prompt file'): load_prompt(tmp_path, clip)

def test_round_trip_every_variant(tmp_path):
    x = None
    for arch in ('coop-test-vit', 'coop-test-rn', 'coop-test-custom'):
        clip = load_clip(arch, device='cpu')
        s = clip.visual.image_size
        x = torch.randn(2, 3, *(s if isinstance(s, tuple) else (s, s)))
        for kw in (dict(n_ctx=3), dict(ctx_init='a photo of a'), dict(n_ctx=4, csc=True, class_token_position='middle'),
                   dict(n_ctx=2, class_token_position='front')):
            m = CoOpModel(clip, ['cat', 'golden retriever', 'sea_lion'], **kw)
            with torch.no_grad(): m.prompt_learner.ctx.add_(torch.randn_like(m.prompt_learner.ctx))
            m2 = load_prompt(save_prompt(m, tmp_path/f'{arch}.safetensors'), clip)
            assert torch.equal(m2.prompt_learner.ctx, m.prompt_learner.ctx)
            for a in ('n_ctx', 'csc', 'class_token_position', 'ctx_init'):
                assert getattr(m2.prompt_learner, a) == getattr(m.prompt_learner, a)
            with torch.no_grad(): assert torch.equal(m2(x), m(x))

def test_load_leaves_rng_alone(saved, clip):
    f, m, info = saved
    torch.manual_seed(0); a = torch.rand(3)
    torch.manual_seed(0); load_prompt(f, clip); b = torch.rand(3)
    assert torch.equal(a, b)

def test_other_weights_warn(saved):
    f, m, info = saved
    other = load_clip('coop-test-vit', device='cpu')  # new random weights
    with pytest.warns(UserWarning, match='differ from those prompt p.safetensors was learned on'): load_prompt(f, other)

def test_unknown_recorded_clip(saved, tmp_path):
    f, m, info = saved
    g = _write(tmp_path/'g.safetensors', m.prompt_learner.ctx.detach(), _changed(info, arch='coop-test-gone'))
    with pytest.raises(RuntimeError, match=r"learned on CLIP 'coop-test-gone' with pretrained=None, which could not be loaded here: Unknown CLIP architecture"):
        load_prompt(g)
    g = _write(tmp_path/'h.safetensors', m.prompt_learner.ctx.detach(), _changed(info, arch=None))
    with pytest.raises(ValueError, match='does not record which CLIP'): load_prompt(g)

def test_csc_names(clip, tmp_path):
    m = CoOpModel(clip, ['cat', 'dog'], n_ctx=2, csc=True)
    f = save_prompt(m, tmp_path/'c.safetensors')
    with pytest.raises(ValueError, match=r"cannot prompt new classes \('cow', 'pig'\)"): load_prompt(f, clip, ['cat', 'cow', 'pig'])
    assert load_prompt(f, clip, ['dog']).classnames == ['dog']

# -- saving

def test_save_bad_input(clip, saved, tmp_path):
    f, m, info = saved
    with pytest.raises(TypeError, match='`summary` must be a dict, got list'): save_prompt(m, tmp_path/'a', [1])
    with pytest.raises(TypeError, match=r"summary\['fn'\] is a function"): save_prompt(m, tmp_path/'a', dict(fn=lambda: 0))
    with pytest.raises(TypeError, match='Expected a coop_fast PromptModel'): save_prompt('model', tmp_path/'a')
    with pytest.raises(ValueError, match='is a folder'): save_prompt(m, tmp_path)
    bad = CoOpModel(clip, ['cat'], n_ctx=2)
    with torch.no_grad(): bad.prompt_learner.ctx[0, 0] = float('inf')
    with pytest.raises(ValueError, match='non-finite values .* Nothing was saved'): save_prompt(bad, f)
    assert read_prompt(f)[1] == info
    assert not list(tmp_path.glob('a*'))

def _no_temp(d): return [p.name for p in d.iterdir() if p.name.endswith('.tmp')] == []

def test_failing_write_keeps_old_file(saved, tmp_path, monkeypatch):
    f, m, info = saved
    before = f.read_bytes()
    def half(tensors, fn, metadata=None):
        Path(fn).write_bytes(b'\x00' * 10)
        raise OSError('No space left on device')
    monkeypatch.setattr(ex, 'save_file', half)
    with pytest.raises(OSError, match='No space left'): save_prompt(m, f, dict(shots=2))
    assert f.read_bytes() == before and _no_temp(tmp_path)

def test_interrupted_rename_keeps_old_file(saved, tmp_path, monkeypatch):
    f, m, info = saved
    before = f.read_bytes()
    def interrupt(*a): raise KeyboardInterrupt
    monkeypatch.setattr(ex.os, 'replace', interrupt)
    with pytest.raises(KeyboardInterrupt): save_prompt(m, f, dict(shots=2))
    monkeypatch.undo()
    assert f.read_bytes() == before and _no_temp(tmp_path)
    save_prompt(m, f, dict(shots=2))
    assert read_prompt(f)[1]['summary'] == dict(shots=2) and _no_temp(tmp_path)

def test_new_file_mode(saved, tmp_path):
    f, m, info = saved
    um = os.umask(0); os.umask(um)
    assert f.stat().st_mode & 0o777 == 0o666 & ~um

def test_save_makes_folders(saved, tmp_path):
    f, m, info = saved
    g = save_prompt(m, tmp_path/'a'/'b'/'pets')
    assert g == tmp_path/'a'/'b'/'pets.safetensors' and g.exists()

# -- predict

def test_predict_bad_images(saved, clip, tmp_path):
    f, m, info = saved
    from PIL import Image
    Image.new('RGB', (50, 40), 'red').save(tmp_path/'ok.png')
    b = (tmp_path/'ok.png').read_bytes()
    (tmp_path/'cut.png').write_bytes(b[:len(b)//2])
    with pytest.raises(ValueError, match=f"Cannot read image {tmp_path/'cut.png'}"): predict(m, tmp_path/'cut.png')
    with pytest.raises(ValueError, match='bs must be a positive integer'): predict(m, tmp_path/'ok.png', bs=0)
    with pytest.raises(ValueError, match=r'Cannot predict a torch.int64 tensor'): predict(m, torch.zeros(3, 32, 32, dtype=torch.long))
    with pytest.warns(UserWarning, match='Skipped 1 unreadable'):
        with pytest.raises(ValueError, match='None of the 1 images could be read'): predict(m, [tmp_path/'cut.png'], skip_bad=True)
    with pytest.warns(UserWarning, match='random weights'):  # a prompt file loads the CLIP it records
        assert predict(f, tmp_path/'ok.png').label in m.classnames

def test_zeroshot_in_the_cli(tmp_path):
    """Zero-shot CLIP from the command line: its prompt file evaluates, predicts and bakes like any other, and `eval
    --method zeroshot --arch A DATA` scores a folder with no prompt file, a test-only (shifted) folder too"""
    import shutil
    from coop_fast.cli import run_cli
    from coop_fast.deploy import load_head
    from coop_fast.tiny.tasks import make_task
    task = make_task('digits', tmp_path/'tasks')
    zs, opts = tmp_path/'zs.safetensors', ('--device', 'cpu', '--threads', '1')
    code, out, err = run_cli('train', task, '--method', 'zeroshot', '--arch', 'coop-tiny', '--shots', '1', '--out', zs,
                             '--json', '--workers', '0', *opts)
    assert code == 0, err
    trained = json.loads(out)
    code, out, err = run_cli('eval', zs, task, '--json', '--workers', '0', *opts)
    assert code == 0, err
    with_file = json.loads(out)
    code, out, err = run_cli('eval', '--method', 'zeroshot', '--arch', 'coop-tiny', task, '--json', '--workers', '0', *opts)
    assert code == 0, err
    no_file = json.loads(out)
    assert trained['n'] == with_file['n'] == no_file['n'] > 0
    assert trained['accuracy'] == with_file['accuracy'] == no_file['accuracy']  # a count over the same images and model
    assert (no_file['method'], no_file['label'], no_file['prompt'], no_file['arch']) == ('zeroshot', 'Zero-shot CLIP', None, 'coop-tiny')
    shifted = tmp_path/'shifted'  # a folder that holds only test/, of two classes
    for c in ('seven', 'two'):
        shutil.copytree(task/'test'/c, shifted/'test'/c, ignore=lambda d, fs: sorted(fs)[5:])
    code, out, err = run_cli('eval', '--method', 'zeroshot', '--arch', 'coop-tiny', shifted, '--json', '--workers', '0', *opts)
    assert code == 0, err
    assert (json.loads(out)['n'], json.loads(out)['classnames']) == (10, ['seven', 'two'])
    code, out, err = run_cli('predict', zs, shifted/'test'/'seven', '--json', *opts)
    assert code == 0 and len(json.loads(out)) == 5, err
    code, out, err = run_cli('bake', zs, '--out', tmp_path/'head.safetensors', '--device', 'cpu')
    assert code == 0, err
    head, model = load_head(tmp_path/'head.safetensors'), load_prompt(zs, device='cpu')
    f = torch.randn(4, head.embed_dim)
    with torch.no_grad(): assert (head(f) - model(f)).abs().max() <= 1e-4 * model(f).abs().max()
    code, out, err = run_cli('export', zs, '--onnx', tmp_path/'zs.onnx')
    assert code == 0, err
    for shared in (zs, tmp_path/'head.safetensors', tmp_path/'zs.onnx'):  # made to be shared: no path of the user's data
        assert str(tmp_path).encode() not in shared.read_bytes(), shared
    assert read_prompt(zs)[1]['summary']['source'] == 'digits'
    for args, msg in [(('eval', zs), 'Give a prompt file and the data'),
                      (('eval', '--method', 'zeroshot', zs, task), '--method zeroshot needs no prompt file'),
                      (('eval', '--method', 'coop', task), 'only zeroshot is evaluated without a prompt file'),
                      (('eval', zs, task, '--arch', 'coop-tiny'), '--arch is for --method zeroshot'),
                      (('eval', '--method', 'zeroshot', task, '--prompt_classes'), 'zero-shot CLIP has none')]:
        code, out, err = run_cli(*args, *opts)
        assert code == 2 and msg in err and err.count('\n') == 1, (args, err)
