"Loading pretrained weights offline fails fast with a message that says what to do."
import subprocess, sys, time

def test_openai_offline_fails_fast():
    code = "from coop_fast.clip import load_clip; load_clip('ViT-B-16', 'openai')"
    t = time.perf_counter()
    r = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=120,
                       env={**__import__('os').environ, 'HF_HUB_OFFLINE': '1'})
    assert r.returncode != 0
    assert "Could not get the 'openai' weights of 'ViT-B-16'" in r.stderr
    assert 'Download the weights once' in r.stderr and "load_clip('ViT-B-16', '/path/to/weights.pt')" in r.stderr
    assert time.perf_counter() - t < 60
