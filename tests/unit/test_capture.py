import pytest
import torch

from mechref.capture import capture_attention, capture_residual, normalize_positions, resid_hook_name


def full_cache(model, text):
    ids, mask = model.tokenize([text])
    with torch.no_grad():
        _, cache = model.bridge.run_with_cache(ids, attention_mask=mask)
    return cache


def test_shapes_and_values_match_full_cache(tiny, prompts):
    acts = capture_residual(tiny, prompts, layers=[0, 2], positions=[-3, -1], kind="resid_post", progress=False)
    assert acts.shape == (len(prompts), 2, 2, tiny.d_model)
    for i, prompt in enumerate(prompts):
        cache = full_cache(tiny, tiny.chat.format(prompt))
        for j, layer in enumerate([0, 2]):
            expected = cache[resid_hook_name(layer, "resid_post")][0, [-3, -1]]
            torch.testing.assert_close(acts[i, :, j], expected, atol=1e-5, rtol=1e-5)


def test_padded_and_unpadded_batches_agree(tiny, prompts):
    one_by_one = capture_residual(tiny, prompts, layers=None, positions="post_instruction", batch_size=1, progress=False)
    batched = capture_residual(tiny, prompts, layers=None, positions="post_instruction", batch_size=4, progress=False)
    torch.testing.assert_close(batched, one_by_one, atol=1e-4, rtol=1e-4)


def test_running_mean_matches_mean_of_activations(tiny, prompts):
    acts = capture_residual(tiny, prompts, layers=[1], positions=-1, batch_size=3, progress=False)
    mean = capture_residual(tiny, prompts, layers=[1], positions=-1, batch_size=3, reduce="mean", progress=False)
    assert mean.dtype == torch.float64
    torch.testing.assert_close(mean, acts.double().mean(0))


def test_all_residual_points(tiny_qwen, prompts):
    pre = capture_residual(tiny_qwen, prompts, layers=[1], kind="resid_pre", progress=False)
    post0 = capture_residual(tiny_qwen, prompts, layers=[0], kind="resid_post", progress=False)
    mid = capture_residual(tiny_qwen, prompts, layers=[1], kind="resid_mid", progress=False)
    torch.testing.assert_close(pre, post0)  # the stream leaving block 0 enters block 1
    assert not torch.allclose(mid, pre)


def test_bad_positions_and_layers(tiny_qwen):
    with pytest.raises(ValueError, match="negative"):
        normalize_positions(tiny_qwen, [0])
    with pytest.raises(ValueError, match="out of range"):
        capture_residual(tiny_qwen, ["hi"], layers=[7], progress=False)
    with pytest.raises(ValueError, match="before the start"):
        capture_residual(tiny_qwen, ["hi"], positions=[-500], progress=False)


def test_attention_capture(tiny, prompts):
    cap = capture_attention(tiny, prompts, heads=[(0, 1), (2, 3)], query_positions=[-2, -1], progress=False)
    for i, prompt in enumerate(prompts):
        pattern = cap.patterns[i]
        n_tokens = len(cap.input_ids[i])
        assert pattern.shape == (2, 2, n_tokens)
        torch.testing.assert_close(pattern.sum(-1), torch.ones(2, 2), atol=1e-5, rtol=0)
        cache = full_cache(tiny, tiny.chat.format(prompt))
        expected = cache["blocks.2.attn.hook_pattern"][0, 3, -2:]
        torch.testing.assert_close(pattern[1], expected.float(), atol=1e-5, rtol=1e-5)


def test_empty_or_malformed_prompt_lists(tiny_qwen):
    from mechref.errors import DataFormatError

    with pytest.raises(DataFormatError, match="empty"):
        capture_residual(tiny_qwen, [], progress=False)
    with pytest.raises(DataFormatError, match="prompt 1"):
        capture_residual(tiny_qwen, ["ok", "  "], progress=False)
