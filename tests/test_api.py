"Every public name of the package, and every event of its callbacks, has a docstring (the docs show it)"
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

