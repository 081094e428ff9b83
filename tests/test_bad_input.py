"""Bad input, collected: every user-facing entry point (data, learner, prompt files, checkpoints, CLI) answers it with one
clear message naming the bad thing; the CLI exits with status 2 and that message, without a traceback; non-finite losses
stop training with the context finite; no command leaves a corrupted output file."""
import json, math, os, pickle, re, subprocess, sys, types, warnings
from pathlib import Path
import pytest, torch
from fastai.callback.core import Callback
from fastcore.script import call_parse
from PIL import Image
from coop_fast.clip import load_clip
from coop_fast.data import fake_images, fewshot_dls, eval_dl
from coop_fast.datasets import dataset_dls, dataset_dl, fake_dataset
from coop_fast.learner import coop_learner
from coop_fast.prompt import CoOpModel
from coop_fast.export import save_prompt, load_prompt, read_prompt, predict
from coop_fast.checkpoint import read_checkpoint, ckpt_format
from coop_fast.export import save_tensors
import coop_fast.cli as cli
from coop_fast.cli import main, run_cli

torch.set_num_threads(1)
ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, 'PYTHONPATH': str(ROOT), 'HF_HUB_OFFLINE': '1', 'OMP_NUM_THREADS': '1'}
TINY = ['--arch', 'coop-test-vit', '--pretrained', 'random', '--n_ctx', '4', '--bs', '4', '--workers', '0', '--device', 'cpu', '--quiet']
KW = dict(bs=4, num_workers=0, device='cpu')

run = run_cli  # (exit status, stdout, stderr) of `coop-fast ARGS`, run in this process

@pytest.fixture(scope='module')
def e(tmp_path_factory):
    "Folders, files, a CLIP, DataLoaders and prompt files to spoil"
    t = tmp_path_factory.mktemp('bad')
    e = types.SimpleNamespace(tmp=t, imgs=fake_images(t/'imgs', n=6), clip=load_clip('coop-test-vit', device='cpu'))
    e.one = fake_images(t/'one', classes=('cat',), n=3)
    e.other = fake_images(t/'other', classes=('cat', 'tree', 'car'), n=2)
    e.testonly = fake_images(t/'testonly'/'test', n=2).parent
    e.mixed = fake_images(t/'mixed', n=2); fake_images(t/'mixed'/'test', n=1)
    e.flat = t/'flat'; e.flat.mkdir(); Image.new('RGB', (8, 8)).save(e.flat/'x.png')
    e.empty = t/'empty'; e.empty.mkdir()
    e.nodir = t/'nodir'; e.nodir.mkdir(); (e.nodir/'cat').mkdir()
    e.bad = fake_images(t/'badimgs', n=6); (e.bad/'cat/0.jpg').write_bytes(b'not a jpeg')
    e.bad1 = t/'bad1'; e.bad1.mkdir(); (e.bad1/'x.jpg').write_bytes(b'not a jpeg')
    e.dls = fewshot_dls(e.imgs, e.clip, shots=2, **KW)
    e.dls48 = fewshot_dls(e.imgs, load_clip('coop-test-rn', device='cpu'), shots=2, **KW)  # 64 px images
    assert run('train', e.imgs, '--shots', 2, '--epochs', 1, '--out', t/'p.safetensors', *TINY)[0] == 0
    assert run('train', e.imgs, '--shots', 2, '--epochs', 1, '--csc', '--out', t/'csc.safetensors', *TINY)[0] == 0
    e.prompt, e.csc, e.ckpt = t/'p.safetensors', t/'csc.safetensors', t/'p.ckpt.safetensors'
    tensors, info = read_checkpoint(e.ckpt)  # a run of 3 epochs that stopped after 1
    e.unfinished = t/'unfinished.safetensors'
    save_tensors(t/'unfinished.ckpt.safetensors', tensors, {'format': ckpt_format, 'coop_fast': json.dumps({**info, 'n_epoch': 3})})
    (t/'pickle.safetensors').write_bytes(pickle.dumps({'ctx': [0.0]}))
    torch.save({'ctx': torch.zeros(4, 32)}, t/'torch.safetensors')
    (t/'text.safetensors').write_text('hello')
    (t/'garbage.ckpt.safetensors').write_bytes(b'\x00' * 100)
    (t/'other.json').write_text(json.dumps({'accuracy': 0.5}))
    (t/'empty.txt').write_text('\n \n')
    (t/'notjson.json').write_text('{"accuracy": ')
    e.noresults = t/'noresults'; e.noresults.mkdir(); (e.noresults/'other.json').write_text('[]')
    e.root = t/'data'; fake_dataset('OxfordPets', e.root); fake_dataset('ImageNetV2', e.root, n=(1, 1, 1))
    e.rn_prompt = save_prompt(CoOpModel(load_clip('coop-test-rn', device='cpu'), ['a', 'b'], n_ctx=2), t/'rn.safetensors')
    return e

def spoiled_model(e):
    m = CoOpModel(e.clip, ['a', 'b'], n_ctx=2)
    with torch.no_grad(): m.prompt_learner.ctx[0, 0] = float('nan')
    return m

# (case, call, exception, message): the Python API
api = [
    # data
    ('folder missing', lambda e: fewshot_dls(e.tmp/'nope', e.clip, **KW), FileNotFoundError, 'Image folder {tmp}/nope does not exist'),
    ('folder is a file', lambda e: fewshot_dls(e.imgs/'cat/0.jpg', e.clip, **KW), NotADirectoryError, 'is not a folder'),
    ('shots < 1', lambda e: fewshot_dls(e.imgs, e.clip, shots=0, **KW), ValueError, '`shots` must be a positive integer or None, got 0'),
    ('shots wrong type', lambda e: fewshot_dls(e.imgs, e.clip, shots='4', **KW), ValueError, "`shots` must be a positive integer or None, got '4'"),
    ('seed < 0', lambda e: fewshot_dls(e.imgs, e.clip, seed=-1, **KW), ValueError, '`seed` must be a non-negative integer, got -1'),
    ('no class folders', lambda e: fewshot_dls(e.flat, e.clip, **KW), ValueError, 'has no class sub-folders (one sub-folder of images per class). It has images at the top level'),
    ('one class', lambda e: fewshot_dls(e.one, e.clip, **KW), ValueError, "Few-shot classification needs at least 2 classes; found 1: 'cat'"),
    ('unreadable image', lambda e: fewshot_dls(e.bad, e.clip, shots=6, test_pct=0, **KW), ValueError, '1 image file(s) cannot be read: {tmp}/badimgs/cat/0.jpg'),
    ('duplicate vocab', lambda e: fewshot_dls(e.imgs, e.clip, vocab=['cat', 'dog', 'cat'], **KW), ValueError, "Duplicate class names in `vocab`: 'cat'"),
    ('test_pct out of range', lambda e: fewshot_dls(e.imgs, e.clip, test_pct=1.5, **KW), ValueError, '`test_pct` must be in [0, 1), got 1.5'),
    ('preprocessing wrong type', lambda e: fewshot_dls(e.imgs, 3, **KW), TypeError, 'Expected a CLIP model, a CoOpModel or a ClipPre'),
    ('preprocessing of no CLIP', lambda e: fewshot_dls(e.imgs, 'clip', **KW), ValueError, "Unknown CLIP architecture 'clip'."),
    ('nothing to evaluate', lambda e: eval_dl([], e.clip), ValueError, 'No images to evaluate'),
    ('unknown dataset', lambda e: dataset_dls('Petz', e.root), ValueError, "Unknown dataset 'Petz'. Did you mean 'OxfordPets'?"),
    ('dataset not on disk', lambda e: dataset_dls('EuroSAT', e.root), FileNotFoundError, 'EuroSAT is not (all) under {tmp}/data: missing'),
    ('shift set trained on', lambda e: dataset_dls('ImageNetV2', e.root), ValueError, 'ImageNetV2 is a test-only domain-shift set'),
    ('shift set has no train split', lambda e: dataset_dl('ImageNetV2', e.root, split='train'), ValueError, "ImageNetV2 has no 'train' split"),
    ('unknown subsample', lambda e: dataset_dls('OxfordPets', e.root, e.clip, subsample='half'), ValueError, "`subsample` must be 'all', 'base' or 'new', got 'half'"),
    # learner
    ('unknown arch', lambda e: coop_learner(e.dls, 'ViT-B-61', None), ValueError, "Unknown CLIP architecture 'ViT-B-61'. Close names: ViT-B-16"),
    ('unknown precision', lambda e: coop_learner(e.dls, clip_model=e.clip, precision='fp8'), ValueError, "Unknown precision 'fp8'"),
    ('n_ctx < 1', lambda e: coop_learner(e.dls, clip_model=e.clip, n_ctx=0), ValueError, 'n_ctx must be an integer >= 1, got 0'),
    ('n_ctx not an int', lambda e: coop_learner(e.dls, clip_model=e.clip, n_ctx=2.5), ValueError, 'n_ctx must be an integer >= 1, got 2.5'),
    ('n_ctx too long', lambda e: coop_learner(e.dls, clip_model=e.clip, n_ctx=80), ValueError, "token(s) longer than the text encoder's context length"),
    ('class position', lambda e: coop_learner(e.dls, clip_model=e.clip, class_token_position='back'), ValueError, "class_token_position must be one of ('end', 'middle', 'front'), got 'back'"),
    ('classnames mismatched', lambda e: coop_learner(e.dls, clip_model=e.clip, classnames=['a', 'b']), ValueError, '`classnames` has 2 names but the data has 3 classes (bird, cat, dog)'),
    ('classnames empty', lambda e: coop_learner(e.dls, clip_model=e.clip, classnames=[]), ValueError, '`classnames` has 0 names but the data has 3 classes'),
    ('classnames a string', lambda e: coop_learner(e.dls, clip_model=e.clip, classnames='a b c'), TypeError, '`classnames` must be a list of class names, not one string'),
    ('classname empty', lambda e: coop_learner(e.dls, clip_model=e.clip, classnames=['a', '', 'c']), ValueError, "Class names must be non-empty strings; got ['']"),
    ('ctx_init blank', lambda e: coop_learner(e.dls, clip_model=e.clip, ctx_init='   '), ValueError, "ctx_init '   ' has no tokens"),
    ('ctx_init wrong type', lambda e: coop_learner(e.dls, clip_model=e.clip, ctx_init=3), TypeError, 'ctx_init must be a string of words, got 3'),
    ('clip_model wrong type', lambda e: coop_learner(e.dls, clip_model='model'), TypeError, '`clip_model` must be an open_clip model, got str'),
    ('feature_cache < 0', lambda e: coop_learner(e.dls, clip_model=e.clip, feature_cache=-1), ValueError, 'n_views must be an integer >= 0, got -1'),
    ('images of another size', lambda e: coop_learner(e.dls48, clip_model=e.clip), ValueError, 'The DataLoaders give images of shape (3, 64, 64), but this CLIP takes RGB images of 32x32 pixels'),
    ('epochs < 1', lambda e: coop_learner(e.dls, clip_model=e.clip).fit_resumable(0, e.tmp/'x.ckpt'), ValueError, 'The number of epochs must be a positive integer, got 0'),
    ('lr <= 0', lambda e: coop_learner(e.dls, clip_model=e.clip).fit_resumable(1, e.tmp/'x.ckpt', lr=0), ValueError, 'The learning rate must be a positive finite number, got 0'),
    ('lr not finite', lambda e: coop_learner(e.dls, clip_model=e.clip).fit_resumable(1, e.tmp/'x.ckpt', lr=math.nan), ValueError, 'The learning rate must be a positive finite number, got nan'),
    # prompt files
    ('prompt missing', lambda e: load_prompt(e.tmp/'nope.safetensors'), FileNotFoundError, 'No prompt file {tmp}/nope.safetensors'),
    ('prompt is a pickle', lambda e: load_prompt(e.tmp/'pickle.safetensors'), ValueError, 'it is a Python pickle. coop_fast never unpickles files'),
    ('prompt is a torch.save file', lambda e: load_prompt(e.tmp/'torch.safetensors'), ValueError, 'it is a zip archive, such as a PyTorch checkpoint'),
    ('prompt is text', lambda e: load_prompt(e.tmp/'text.safetensors'), ValueError, 'it is not a safetensors file'),
    ('prompt for another CLIP', lambda e: load_prompt(e.rn_prompt, e.clip), ValueError, "Prompt rn.safetensors was learned on CLIP 'coop-test-rn' (pretrained=None, text width 32), not on CLIP 'coop-test-vit'"),
    ('prompt for another CLIP width', lambda e: load_prompt(e.rn_prompt, load_clip('coop-test-custom', device='cpu')), ValueError,
     "and cannot be used with CLIP 'coop-test-custom' (pretrained=None, text width 48): its context vectors have width 32"),
    ('csc prompt, new classes', lambda e: load_prompt(e.csc, classnames=['tree', 'car', 'boat']), ValueError, 'This prompt has a class-specific context (csc=True)'),
    ('prompt, empty classnames', lambda e: load_prompt(e.prompt, classnames=[]), ValueError, '`classnames` is empty'),
    ('save into a folder', lambda e: save_prompt(CoOpModel(e.clip, ['a', 'b'], n_ctx=2), e.tmp), ValueError, 'is a folder; give a file name'),
    ('save a diverged context', lambda e: save_prompt(spoiled_model(e), e.tmp/'nan.safetensors'), ValueError, 'The prompt has non-finite values (NaN or inf) in prompt_learner.ctx: training diverged. Nothing was saved'),
    ('save a bad summary', lambda e: save_prompt(CoOpModel(e.clip, ['a', 'b'], n_ctx=2), e.tmp/'s.safetensors', summary={'f': object()}), TypeError, "summary['f'] is a object"),
    ('predict missing image', lambda e: predict(load_prompt(e.prompt, e.clip), e.tmp/'nope.jpg'), FileNotFoundError, 'No image file or folder {tmp}/nope.jpg'),
    ('predict unreadable image', lambda e: predict(load_prompt(e.prompt, e.clip), e.bad/'cat/0.jpg'), ValueError, 'Cannot read image {tmp}/badimgs/cat/0.jpg'),
    ('predict empty folder', lambda e: predict(load_prompt(e.prompt, e.clip), e.empty), ValueError, 'No image files in folder'),
    ('predict bs < 1', lambda e: predict(load_prompt(e.prompt, e.clip), e.imgs, bs=0), ValueError, 'bs must be a positive integer, got 0'),
    # checkpoints
    ('checkpoint missing', lambda e: read_checkpoint(e.tmp/'nope.ckpt'), FileNotFoundError, 'No checkpoint'),
    ('checkpoint is a pickle', lambda e: read_checkpoint(e.tmp/'pickle.safetensors'), ValueError, 'it is a Python pickle'),
    ('checkpoint is a prompt', lambda e: read_checkpoint(e.prompt), ValueError, 'it is a prompt file'),
    ('checkpoint is garbage', lambda e: read_checkpoint(e.tmp/'garbage.ckpt.safetensors'), ValueError, 'it is not a safetensors file'),
]

@pytest.mark.parametrize('case,call,exc,msg', api, ids=[c[0] for c in api])
def test_api(e, case, call, exc, msg):
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        with pytest.raises(exc, match=re.escape(msg.format(tmp=e.tmp))): call(e)

# Gaps found in the learner and data modules: these pass once they check their arguments (then drop the mark)
gaps = [
    ('fit_coop(0) trains nothing silently', lambda e: coop_learner(e.dls, clip_model=e.clip).fit_coop(0)),
    ('fit_coop(lr=-1) ascends the loss silently', lambda e: coop_learner(e.dls, clip_model=e.clip).fit_coop(1, lr=-1.)),
    ("coop_learner(csc='yes') is taken as True", lambda e: coop_learner(e.dls, clip_model=e.clip, csc='yes')),
    ('fewshot_dls(bs=0) is accepted', lambda e: fewshot_dls(e.imgs, e.clip, bs=0, num_workers=0, device='cpu')),
]

@pytest.mark.parametrize('case,call', gaps, ids=[c[0] for c in gaps])
def test_unchecked(e, case, call):
    with warnings.catch_warnings(), pytest.raises((ValueError, TypeError)):
        warnings.simplefilter('ignore')
        call(e)

def test_prompt_header_length_128_mod_256(e):
    "A valid prompt file whose header length ends in byte 0x80 loads (coop_fast.export bug, found here)"
    for i in range(600):
        f = save_prompt(CoOpModel(e.clip, ['cat', 'dog' + 'x' * i], n_ctx=2), e.tmp/'hdr.safetensors')
        if f.read_bytes()[0] == 0x80: break
    assert f.read_bytes()[0] == 0x80
    load_prompt(f, e.clip)

# (case, arguments, message): the command line, run in this process
T = TINY
cmd = [
    ('unknown command', lambda e: ['trian'], "unknown command 'trian'. Did you mean 'train'?"),
    ('train: folder missing', lambda e: ['train', e.tmp/'nope', *T], 'No image folder {tmp}/nope (for a benchmark dataset, give its name and --root)'),
    ('train: a file, not a folder', lambda e: ['train', e.imgs/'cat/0.jpg', *T], 'is a file; give a folder of images'),
    ('train: dataset without --root', lambda e: ['train', 'eurosat', *T], "'eurosat' is the benchmark dataset EuroSAT: pass --root"),
    ('train: unknown dataset', lambda e: ['train', 'Petz', '--root', e.root, *T], "Unknown dataset 'Petz'. Did you mean 'OxfordPets'?"),
    ('train: dataset not on disk', lambda e: ['train', 'EuroSAT', '--root', e.root, *T], 'EuroSAT is not (all) under'),
    ('train: shift set', lambda e: ['train', 'ImageNetV2', '--root', e.root, *T], 'ImageNetV2 is a test-only domain-shift set'),
    ('train: shots < 1', lambda e: ['train', e.imgs, '--shots', 0, *T], '--shots must be a positive integer, got 0'),
    ('train: n_ctx < 1', lambda e: ['train', e.imgs, *T, '--n_ctx', 0], '--n_ctx must be a positive integer, got 0'),
    ('train: n_ctx too long', lambda e: ['train', e.imgs, *T, '--n_ctx', 80, '--epochs', 1], "longer than the text encoder's context length"),
    ('train: epochs < 1', lambda e: ['train', e.imgs, '--epochs', 0, *T], '--epochs must be a positive integer, got 0'),
    ('train: bs < 1', lambda e: ['train', e.imgs, *T, '--bs', 0], '--bs must be a positive integer, got 0'),
    ('train: seed < 0', lambda e: ['train', e.imgs, '--seed', -1, *T], '--seed must be an integer >= 0, got -1'),
    ('train: lr = 0', lambda e: ['train', e.imgs, '--lr', 0, *T], '--lr must be a positive finite number, got 0.0'),
    ('train: lr < 0', lambda e: ['train', e.imgs, '--lr', -0.1, *T], '--lr must be a positive finite number, got -0.1'),
    ('train: lr nan', lambda e: ['train', e.imgs, '--lr', 'nan', *T], '--lr must be a positive finite number, got nan'),
    ('train: test_pct', lambda e: ['train', e.imgs, '--test_pct', 1, *T], '--test_pct must be in [0, 1), got 1.0'),
    ('train: feature_cache < 0', lambda e: ['train', e.imgs, '--feature_cache', -1, *T], '--feature_cache must be an integer >= 0, got -1'),
    ('train: workers < 0', lambda e: ['train', e.imgs, *T, '--workers', -1], '--workers must be an integer >= 0, got -1'),
    ('train: unknown device', lambda e: ['train', e.imgs, *T, '--device', 'gpu'], "Unknown --device 'gpu'; use cpu, cuda, cuda:1, mps"),
    pytest.param('train: no such GPU', lambda e: ['train', e.imgs, *T, '--device', 'cuda:7'], '--device cuda:7: PyTorch sees',
                 marks=pytest.mark.skipif(torch.cuda.device_count() > 7, reason='this machine has a GPU 7')),
    ('train: unknown arch', lambda e: ['train', e.imgs, *T, '--arch', 'ViT-B-61'], "Unknown CLIP architecture 'ViT-B-61'. Close names: ViT-B-16"),
    ('train: unknown precision', lambda e: ['train', e.imgs, '--precision', 'fp61', *T], "Unknown --precision 'fp61'; did you mean 'fp16'?"),
    ('train: class position', lambda e: ['train', e.imgs, '--class_token_position', 'back', *T], "Unknown --class_token_position 'back'"),
    ('train: subsample', lambda e: ['train', e.imgs, '--subsample', 'half', *T], "Unknown --subsample 'half'"),
    ('train: subsample of a folder', lambda e: ['train', e.imgs, '--subsample', 'base', *T], '--subsample base/new splits the classes of a benchmark dataset'),
    ('train: unknown weights tag', lambda e: ['train', e.imgs, *T, '--pretrained', 'laion2b'], "Unknown pretrained tag 'laion2b' for 'coop-test-vit'"),
    ('train: weights file missing', lambda e: ['train', e.imgs, *T, '--pretrained', e.tmp/'w.pt'], "No weights file '{tmp}/w.pt'"),
    ('train: no default weights', lambda e: ['train', e.imgs, *T, '--pretrained', 'auto'], "CLIP 'coop-test-vit' has no default weights"),
    ('train: out is a folder', lambda e: ['train', e.imgs, '--out', e.tmp, *T], '--out {tmp} is a folder'),
    ('train: out not safetensors', lambda e: ['train', e.imgs, '--out', e.tmp/'p.pt', *T], "--out must be a .safetensors file name, got 'p.pt'"),
    ('train: unreadable image', lambda e: ['train', e.bad, '--shots', 6, '--test_pct', 0, *T], '1 image file(s) cannot be read: {tmp}/badimgs/cat/0.jpg'),
    ('train: one class', lambda e: ['train', e.one, *T], 'Few-shot classification needs at least 2 classes'),
    ('train: a test set only', lambda e: ['train', e.testonly, *T], 'has no train/ folder to learn from, only test/'),
    ('train: split and class folders mixed', lambda e: ['train', e.mixed, *T], 'mixes split folders (test/) with other folders'),
    ('train: data checked before weights', lambda e: ['train', e.bad, '--shots', 6, '--test_pct', 0, '--arch', 'ViT-B-16', '--device', 'cpu'],
     '1 image file(s) cannot be read: {tmp}/badimgs/cat/0.jpg'),
    ('train: weights offline', lambda e: ['train', e.imgs, '--arch', 'ViT-B-16', '--device', 'cpu', '--workers', 0],
     "The 'openai' weights of CLIP ViT-B-16 are not on this machine, and the model hub cannot be reached (offline?). Train offline with --arch coop-tiny"),
    ('train: unfinished checkpoint', lambda e: ['train', e.imgs, '--shots', 2, '--epochs', 1, '--out', e.unfinished, *T],
     'holds an unfinished run (1 of 3 epochs done): continue it with --resume, or delete the file to start over'),
    ('train: threads < 1', lambda e: ['train', e.imgs, *T, '--threads', 0], '--threads must be a positive integer, got 0'),
    ('train: images at top level', lambda e: ['train', e.flat, *T], 'has no class sub-folders'),
    ('train: empty folder', lambda e: ['train', e.empty, *T], 'has no class sub-folders'),
    ('train: empty class folders', lambda e: ['train', e.nodir, *T], 'Few-shot classification needs at least 2 classes; found 0'),
    ('train: blank ctx_init', lambda e: ['train', e.imgs, '--ctx_init', '  ', *T], "ctx_init '  ' has no tokens"),
    ('train: resume other settings', lambda e: ['train', e.imgs, '--shots', 3, '--epochs', 1, '--out', e.prompt, '--resume', *T],
     'is from a run with other settings (shots: checkpoint 2, now 3)'),
    ('train: resume garbage checkpoint', lambda e: ['train', e.imgs, '--out', e.tmp/'garbage.safetensors', '--resume', *T],
     'garbage.ckpt.safetensors is not a usable coop_fast checkpoint: it is not a safetensors file'),
    ('eval: prompt missing', lambda e: ['eval', e.tmp/'nope.safetensors', e.imgs], 'No prompt file {tmp}/nope.safetensors'),
    ('eval: prompt is a pickle', lambda e: ['eval', e.tmp/'pickle.safetensors', e.imgs], 'it is a Python pickle'),
    ('eval: prompt is a torch.save file', lambda e: ['eval', e.tmp/'torch.safetensors', e.imgs], 'it is a zip archive'),
    ('eval: prompt is text', lambda e: ['eval', e.tmp/'text.safetensors', e.imgs], 'it is not a safetensors file'),
    ('eval: data missing', lambda e: ['eval', e.prompt, e.tmp/'nope'], 'No image folder'),
    ('eval: csc prompt, other classes', lambda e: ['eval', e.csc, e.imgs, '--classnames', 'bird=tree,cat=car,dog=boat', '--device', 'cpu'], 'class-specific context (csc=True)'),
    ('eval: classnames miss data classes', lambda e: ['eval', e.prompt, e.imgs, '--classnames', 'a,b'], "imgs has 3 class(es) that are not among --classnames: 'bird', 'cat', 'dog'"),
    ('eval: data classes unknown to the prompt', lambda e: ['eval', e.prompt, e.other, '--prompt_classes', '--split', 'all'], "other has 2 class(es) that are not among the prompt's classes: 'car', 'tree'"),
    ('eval: one class', lambda e: ['eval', e.prompt, e.one, '--split', 'all'], "one has 1 class ('cat'); scoring needs at least 2"),
    ('eval: classnames empty', lambda e: ['eval', e.prompt, e.imgs, '--classnames', ',,'], "--classnames ',,' has no class names"),
    ('eval: classnames repeated', lambda e: ['eval', e.prompt, e.imgs, '--classnames', 'a,b,a'], "repeats 'a'"),
    ('eval: classnames empty file', lambda e: ['eval', e.prompt, e.imgs, '--classnames', e.tmp/'empty.txt'], '--classnames file {tmp}/empty.txt has no class names'),
    ('eval: unknown split', lambda e: ['eval', e.prompt, e.imgs, '--split', 'valid'], "Unknown --split 'valid'; did you mean 'val'? Use one of test, all, train, val."),
    ('eval: no val folder', lambda e: ['eval', e.prompt, e.imgs, '--split', 'val'], "imgs has no val/ folder (its class folders hold every image)"),
    ('eval: no test images', lambda e: ['eval', e.prompt, e.imgs, '--test_pct', 0], 'has no test images'),
    ('eval: dataset split', lambda e: ['eval', e.prompt, 'ImageNetV2', '--root', e.root, '--split', 'train'], "ImageNetV2 has no 'train' split"),
    ('eval: unreadable image', lambda e: ['eval', e.prompt, e.bad, '--split', 'all'], '1 image file(s) cannot be read'),
    ('eval: out is a folder', lambda e: ['eval', e.prompt, e.imgs, '--out', e.tmp], 'is a folder'),
    ('predict: image missing', lambda e: ['predict', e.prompt, e.tmp/'nope.jpg'], 'No image file or folder {tmp}/nope.jpg'),
    ('predict: empty folder', lambda e: ['predict', e.prompt, e.empty], 'No image files in folder {tmp}/empty'),
    ('predict: unreadable image', lambda e: ['predict', e.prompt, e.bad/'cat/0.jpg', '--device', 'cpu'], 'Cannot read image {tmp}/badimgs/cat/0.jpg'),
    ('predict: nothing readable', lambda e: ['predict', e.prompt, e.bad1, '--skip_bad', '--device', 'cpu'], 'None of the 1 images could be read'),
    ('predict: bs < 1', lambda e: ['predict', e.prompt, e.imgs, '--bs', 0], '--bs must be a positive integer, got 0'),
    ('results: path missing', lambda e: ['results', e.tmp/'nope'], 'No result file or folder {tmp}/nope'),
    ('results: not a result record', lambda e: ['results', e.tmp/'other.json'], 'other.json is not a coop_fast result record'),
    ('results: not JSON', lambda e: ['results', e.tmp/'notjson.json'], 'notjson.json is not a JSON file'),
    ('results: no records in folder', lambda e: ['results', e.noresults], 'No coop_fast result records in {tmp}/noresults'),
    ('results: unknown column', lambda e: ['results', e.tmp/'p.json', '--by', 'dataset,nope'], 'The records have no column nope'),
    ('results: no column', lambda e: ['results', e.tmp/'p.json', '--by', ','], '--by names no column'),
]

@pytest.mark.parametrize('case,args,msg', cmd, ids=[c.values[0] if hasattr(c, 'values') else c[0] for c in cmd])
def test_cli(e, case, args, msg):
    code, out, err = run(*args(e))
    assert code == 2, (code, err)
    err = '\n'.join(l for l in err.splitlines() if not l.startswith('coop-fast: warning:'))
    assert err.startswith('coop-fast: error: ') and 'Traceback' not in err, err
    assert msg.format(tmp=e.tmp) in err, err
    if 'is not (all) under' not in msg: assert len(err.strip().splitlines()) == 1, err  # (that one lists the files to place)

def test_cli_argument_types(e):
    code, out, err = run('train', e.imgs, '--shots', 'four')
    assert code == 2 and "coop-fast train: error: argument --shots: invalid int value: 'four'" in err
    code, out, err = run('train')
    assert code == 2 and 'the following arguments are required: source' in err

@pytest.mark.parametrize('args,msg', [
    (['train', 'imgs', '--shots', '0'], 'coop-fast: error: --shots must be a positive integer, got 0.'),
    (['frobnicate'], "coop-fast: error: unknown command 'frobnicate'."),
    (['eval', 'nope.safetensors', 'imgs'], 'coop-fast: error: No prompt file nope.safetensors.'),
])
def test_cli_subprocess(e, args, msg):
    r = subprocess.run([sys.executable, '-m', 'coop_fast.cli', *args], capture_output=True, text=True, env=ENV, cwd=e.tmp, timeout=120)
    assert r.returncode == 2 and r.stderr.strip().splitlines() == [r.stderr.strip()] and r.stderr.startswith(msg), r.stderr

# Non-finite losses: a clear message, the context finite, no prompt file written, an older one intact

def test_nonfinite_lr_cli(e):
    f = e.tmp/'keep.safetensors'
    f.write_bytes(e.prompt.read_bytes())
    before = f.read_bytes()
    code, out, err = run('train', e.imgs, '--shots', 2, '--epochs', 3, '--lr', 1e30, '--out', f, *TINY)
    assert code == 2 and 'the loss is nan (not finite)' in err and f'{f} is unchanged' in err, err
    assert len(err.strip().splitlines()) == 1 and f.read_bytes() == before
    ck = read_checkpoint(e.tmp/'keep.ckpt.safetensors')  # the last epoch that ended with a finite loss
    assert ck[1]['epoch'] < 3 and torch.isfinite(ck[0]['param.prompt_learner.ctx']).all()
    code, out, err = run('train', e.imgs, '--shots', 2, '--epochs', 3, '--lr', 1e30, '--out', e.tmp/'new.safetensors', *TINY)
    assert code == 2 and 'No prompt file was written.' in err and not (e.tmp/'new.safetensors').exists()

class Poison(Callback):
    "Turn the images of the second training batch into NaN"
    order = 0
    def before_batch(self):
        if self.training and self.iter == 1: self.learn.xb = (self.xb[0] * float('nan'),)

@pytest.mark.parametrize('how', ['lr', 'poisoned batch'])
def test_nonfinite_api(e, how):
    dls = fewshot_dls(e.imgs, e.clip, shots=4, bs=2, **{k: v for k, v in KW.items() if k != 'bs'})
    learn = coop_learner(dls, clip_model=e.clip, n_ctx=4, cbs=Poison() if how != 'lr' else None)
    with learn.no_bar(), learn.no_logging(), pytest.warns(RuntimeWarning, match=r'the loss is nan \(not finite\)'):
        learn.fit_coop(3, lr=1e30 if how == 'lr' else 2e-3)
    assert learn.coop_summary['stopped'].startswith('Training stopped at epoch')
    assert torch.isfinite(learn.model.prompt_learner.ctx).all()
    save_prompt(learn, e.tmp/f'finite_{how}.safetensors')  # the kept context is usable

# Never a corrupted output file

def test_failed_writes_leave_old_files(e, monkeypatch):
    import pandas as pd
    csv = e.tmp/'table.csv'
    csv.write_text('old')
    def half(self, path, **kw): Path(path).write_text('dataset,met'); raise OSError('No space left on device')
    monkeypatch.setattr(pd.DataFrame, 'to_csv', half)
    with pytest.raises(OSError, match='No space left'): main(['results', str(e.tmp/'p.json'), '--csv', str(csv)])
    assert csv.read_text() == 'old' and not [p for p in e.tmp.iterdir() if p.name.startswith('.table.csv')]
    # a checkpoint write that fails half-way leaves the previous checkpoint
    import coop_fast.export as ex
    ck = e.tmp/'c.ckpt.safetensors'
    learn = coop_learner(e.dls, clip_model=e.clip, n_ctx=2)
    with learn.no_bar(), learn.no_logging(): learn.fit_resumable(1, ck)
    good = ck.read_bytes()
    def broken(tensors, fname, metadata=None): Path(fname).write_bytes(b'\x10half'); raise OSError('disk full')
    monkeypatch.setattr(ex, 'save_file', broken)
    learn = coop_learner(e.dls, clip_model=e.clip, n_ctx=2)
    with learn.no_bar(), learn.no_logging(), pytest.raises(OSError, match='disk full'): learn.fit_resumable(2, ck)
    assert ck.read_bytes() == good and read_checkpoint(ck)[1]['epoch'] == 1

# Bugs keep their traceback

def test_unexpected_errors_keep_traceback(monkeypatch, e):
    def boom(x:int=1): # A number
        "Fail as a bug would"
        raise RuntimeError('a bug')
    monkeypatch.setitem(cli.commands, 'boom', call_parse(boom))
    with pytest.raises(RuntimeError, match='a bug'): main(['boom'])
    monkeypatch.setenv('COOP_FAST_DEBUG', '1')
    with pytest.raises(ValueError, match='--shots must be a positive integer'): main(['train', str(e.imgs), '--shots', '0'])
