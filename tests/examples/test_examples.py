"""The drop-in examples run offline and train: the loss falls and the char path learns."""

import importlib.util
import math
import sys
from pathlib import Path

import pytest
import torch

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def load_example(name: str):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the file runs
    spec.loader.exec_module(module)
    return module


def assert_trains(result: dict) -> None:
    losses = result["losses"]
    assert all(math.isfinite(loss) for loss in losses)
    assert sum(losses[-3:]) / 3 < losses[0] - 1.0, losses  # from ~ln(100k) = 11.5, clearly down
    assert result["char_grad_norm"] > 0 and math.isfinite(result["char_grad_norm"])


def test_hf_gpt2_dropin(cl100k):
    pytest.importorskip("transformers")
    result = load_example("hf_gpt2_dropin").main(steps=8)
    assert_trains(result)
    assert len(result["generated"]) == len(cl100k.encode_ordinary("ROMEO:")) + 12  # generate() ran 12 steps
    assert result["reloaded_logits_equal"]  # save_pretrained, then charfast.hf.from_pretrained


def test_hf_gpt2_keeps_its_tied_output_layer_and_its_kv_cache_exact(cl100k):
    pytest.importorskip("transformers")
    torch.manual_seed(0)
    example = load_example("hf_gpt2_dropin")
    model = example.char_aware_gpt2(example.cl100k_tokenizer()).eval()
    assert model.lm_head.weight is model.get_input_embeddings().weight
    prompt = torch.tensor([cl100k.encode_ordinary("How many r's are in strawberry?")])
    with torch.no_grad():
        cached, recomputed = (
            model.generate(prompt, max_new_tokens=10, do_sample=False, use_cache=use, pad_token_id=cl100k.eot_token)
            for use in (True, False)
        )
    assert cached.shape == (1, prompt.shape[1] + 10) and torch.equal(cached, recomputed)
