"Loading pretrained weights offline fails at once, without retries, with a message that says what to do; bad arguments are refused before PyTorch is imported."
import os, socket, subprocess, sys
import pytest

def test_openai_offline_fails_fast():
    code = "from coop_fast.clip import load_clip; load_clip('ViT-B-16', 'openai')"
    r = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=120,
                       env={**os.environ, 'HF_HUB_OFFLINE': '1'})
    assert r.returncode != 0
    assert "Could not get the 'openai' weights of 'ViT-B-16'" in r.stderr
    assert 'Download the weights once' in r.stderr and "load_clip('ViT-B-16', '/path/to/weights.pt')" in r.stderr

def test_unreachable_hub_is_not_contacted(monkeypatch):
    "HF_HUB_OFFLINE unset, the hub's host silent: no connection is tried for the weights (no retries), the error comes at once"
    import coop_fast.clip as cc
    from huggingface_hub import constants
    monkeypatch.setattr(constants, 'HF_HUB_OFFLINE', False)
    monkeypatch.delenv('HF_HUB_OFFLINE', raising=False)
    asked = []
    monkeypatch.setattr(cc, '_answers', lambda *a: asked.append(a) or False)  # the one look-up: no answer
    tried = []
    def no_net(*a, **k): tried.append(a); raise OSError('no network')
    monkeypatch.setattr(socket, 'getaddrinfo', no_net)
    monkeypatch.setattr(socket.socket, 'connect', no_net)
    with pytest.raises(cc.WeightsUnavailable, match="looks offline"): cc.load_clip('ViT-B-16', 'openai', device='cpu')
    assert tried == [] and [a[0] for a in asked] == [constants.ENDPOINT.split('/')[2]]
    assert constants.HF_HUB_OFFLINE is False  # put back

def test_reachable_hub_is_asked(monkeypatch):
    "With the hub answering, huggingface_hub is left online"
    import coop_fast.clip as cc
    from huggingface_hub import constants
    monkeypatch.setattr(constants, 'HF_HUB_OFFLINE', False)
    monkeypatch.delenv('HF_HUB_OFFLINE', raising=False)
    monkeypatch.setattr(cc, '_answers', lambda *a: True)
    assert not cc.hub_offline()
    monkeypatch.setenv('HF_HUB_OFFLINE', '1')
    assert cc.hub_offline()

@pytest.mark.parametrize('args,msg', [
    (['train', 'imgs', '--method', 'coopp'], "Unknown method 'coopp'; did you mean 'coop'?"),
    (['train', 'imgs', '--hp', 'lam'], "--hp takes name=value pairs"),
    (['train', 'imgs', '--method', 'kgcoop', '--hp', 'lamb=2'], "KgCoOp has no hyper-parameter 'lamb'"),
    (['train', 'imgs', '--method', 'zeroshot', '--n_ctx', '4'], "--n_ctx is not an option of Zero-shot CLIP"),
    (['sweep', 'EuroSAT', '--methods', 'coop,cooop'], "Unknown method 'cooop'"),
])
def test_bad_method_refused_before_torch(args, msg):
    "A misspelt --method or a bad --hp is refused before PyTorch (seconds of CPU) is imported"
    code = ("import sys; from coop_fast.cli import main; rc = main(sys.argv[1:]); "
            "print('torch' in sys.modules, rc)")
    r = subprocess.run([sys.executable, '-c', code, *args], capture_output=True, text=True, timeout=120,
                       env={**os.environ, 'HF_HUB_OFFLINE': '1'})
    assert r.stdout.split() == ['False', '2'] and msg in r.stderr, (r.stdout, r.stderr)
