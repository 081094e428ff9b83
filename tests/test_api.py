"Every public name of the package, and every event of its callbacks, has a docstring (the docs show it); every learner takes the CLIP of its DataLoaders"
import importlib, inspect, pkgutil
import pytest
from fastai.callback.core import Callback, _events
import coop_fast

def modules():
    "Every module of the package, imported"
    return [importlib.import_module(m.name) for m in pkgutil.walk_packages(coop_fast.__path__, 'coop_fast.')]

def own(mod):
    "The functions and classes that `mod` defines and exports"
    objs = (getattr(mod, k) for k in getattr(mod, '__all__', []))
    return [o for o in objs if (inspect.isfunction(o) or inspect.isclass(o)) and o.__module__ == mod.__name__]

def test_public_names_documented():
    missing = [f'{o.__module__}.{o.__qualname__}' for mod in modules() for o in own(mod) if not inspect.getdoc(o)]
    assert not missing, f"no docstring: {missing}"

def test_callback_events_documented():
    cbs = [o for mod in modules() for o in own(mod) if inspect.isclass(o) and issubclass(o, Callback)]
    assert len(cbs) >= 8, [c.__name__ for c in cbs]  # the package's callbacks were found
    missing = [f'{c.__module__}.{c.__name__}.{k}' for c in cbs for k, v in vars(c).items()
               if k in _events and callable(v) and not v.__doc__]
    assert not missing, f"callback events without a docstring: {missing}"


# Every learner takes the CLIP its DataLoaders were built for (issue 24, item 7)
import tempfile, warnings
from pathlib import Path
import torch
from coop_fast.clip import default_tags
from coop_fast.data import fake_images, fewshot_dls
from coop_fast.methods import list_methods, get_method

_fits_tiny = dict(ivlp=dict(depth_text=3, depth_vision=3), promptsrc=dict(depth_text=3, depth_vision=3),
                  maple=dict(depth=3))  # coop-tiny has 3 text and 4 image blocks

@pytest.fixture(scope='module')
def tiny_dls():
    "Few-shot DataLoaders of fake images, built for coop-tiny (`fewshot_dls(folder, 'coop-tiny')`)"
    folder = fake_images(Path(tempfile.mkdtemp())/'imgs', n=6)
    return fewshot_dls(folder, 'coop-tiny', shots=2, seed=1, bs=4, num_workers=0)

def _learner(name, dls, *args):
    m = get_method(name)
    kw = {**_fits_tiny.get(name, {}), **(dict(views=1) if 'views' in m.hparams else {})}
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')  # e.g. the truncated text path's notice
        return m.learner(dls, *args, **kw)

@pytest.mark.parametrize('name', list_methods())
def test_learner_defaults_to_the_clip_of_its_dataloaders(name):
    ps = inspect.signature(get_method(name).learner).parameters
    assert (ps['arch'].default, ps['pretrained'].default) == (None, 'auto'), name

@pytest.mark.parametrize('name', list_methods())
def test_learner_uses_the_clip_of_its_dataloaders(name, tiny_dls):
    assert tiny_dls.clip_arch == 'coop-tiny'
    for args in ((), ('coop-tiny',)):  # the DataLoaders' CLIP, or the same one named, with its default weights
        learn = _learner(name, tiny_dls, *args)
        assert (learn.arch, learn.pretrained) == ('coop-tiny', default_tags['coop-tiny']), (name, args)
    with learn.no_bar(): label, idx, probs = learn.predict(tiny_dls.test.dataset.items[0])
    assert (type(idx), type(probs)) == (torch.Tensor, torch.Tensor), name  # plain tensors, as fastai's `predict` gives
    assert (str(label), probs.shape) == (tiny_dls.vocab[idx], (3,)), name
