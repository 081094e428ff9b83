"The tiny CLIP's pretraining as a console command: `python -m coop_fast.tiny.pretrain`"
import os, subprocess, sys
from coop_fast.clip import load_clip, clip_pre

def test_pretrain_command(tmp_path):
    out = tmp_path/'tiny.safetensors'
    env = {**os.environ, 'HF_HUB_OFFLINE': '1'}
    r = subprocess.run([sys.executable, '-m', 'coop_fast.tiny.pretrain', '--steps', '2', '--bs', '8', '--out', str(out)],
                       capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr
    assert 'step 2/2' in r.stdout and f'saved {out}' in r.stdout
    m = load_clip('coop-tiny', str(out), device='cpu')
    assert clip_pre(m).size == 32 and m.clip_id['pretrained'] == str(out)
