"Every method of `coop-fast methods` trains with its own defaults on the offline CLIP (issue 23)"
import json
import pytest, torch
from coop_fast.cli import run_cli
from coop_fast.data import fake_images
from coop_fast.export import read_prompt
from coop_fast.methods import list_methods

torch.set_num_threads(1)

@pytest.fixture(scope='module')
def imgs(tmp_path_factory): return fake_images(tmp_path_factory.mktemp('d')/'imgs', n=6, size=(40, 36))

@pytest.mark.parametrize('method', list_methods())
def test_method_defaults_train_on_coop_tiny(imgs, tmp_path, method):
    "`coop-fast train DATA --arch coop-tiny --method M`, changing nothing but the shots and epochs; a capped default is said"
    f = tmp_path/'p.safetensors'
    code, out, err = run_cli('train', imgs, '--arch', 'coop-tiny', '--method', method, '--shots', 2, '--epochs', 1,
                             '--workers', 0, '--out', f, '--json', '--quiet')
    assert code == 0, err
    rec = json.loads(out)
    assert rec['method'] == method and 0 <= rec['accuracy'] <= 1 and f.exists(), rec
    if method in ('ivlp', 'maple', 'promptsrc'):  # the official depths, capped at coop-tiny's 3 text layers, said so
        assert 'capped at the 3 layers' in err, err
        assert any('capped at the 3 layers' in n for n in read_prompt(f)[1]['summary']['notes']), f

def test_explicit_depth_past_the_tower_is_refused(imgs, tmp_path):
    "An explicit `--hp depth=9` on coop-tiny's 3 text layers keeps the error, which names the option that fixes it"
    f = tmp_path/'p.safetensors'
    code, _, err = run_cli('train', imgs, '--arch', 'coop-tiny', '--method', 'maple', '--hp', 'depth=9', '--shots', 2,
                           '--epochs', 1, '--workers', 0, '--out', f, '--quiet')
    assert code != 0 and not f.exists(), (code, err)
    assert "depth=9, but this CLIP's text tower has 3 layers: pass depth=3 or fewer (`--hp depth=3` on the command line)" in err, err
    assert len(err.strip().splitlines()) == 1, err
