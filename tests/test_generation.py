"""Batched generation: order, batching equivalence, stop strings, EOS, sampling (tiny random Llama)."""

from __future__ import annotations

import pytest

from reasontune.engines.generation import Generation, StopRule, apply_stop_rule, generate

QUESTIONS = ["What is 2 + 2?", "Tom has 39 coins and loses 38 of them. How many coins does Tom have now?",
             "Hi", "Compute 17 * 23 step by step, showing every intermediate product.", "Name a prime."]


@pytest.fixture(scope="module")
def tiny(smol_dir):
    """A 2-layer random Llama with SmolLM2's tokenizer. Untied, wider-initialised weights, so greedy
    decoding wanders through the vocabulary instead of repeating one token (a weak test otherwise)."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # ops this small gain nothing from threads and lose a lot on a busy CPU
    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(smol_dir)
    tok.padding_side = "left"
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                      tie_word_embeddings=False, initializer_range=0.2)
    yield LlamaForCausalLM(cfg).eval(), tok
    torch.set_num_threads(threads)


def _prompts():
    return [[{"role": "system", "content": "Be brief."}, {"role": "user", "content": q}] for q in QUESTIONS]


def test_batched_equals_one_at_a_time_and_hf(tiny):
    """Exact token equality needs identical numerics: fp32 (no bf16 autocast, which `auto` turns on
    where bf16 is native and which HF generate does not use)."""
    from functools import partial

    model, tok = tiny
    prompts = _prompts()
    generate_fp32 = partial(generate, autocast_setting="false")
    batched = generate_fp32(model, tok, prompts, max_new_tokens=12, batch_size=3)
    assert len(batched) == len(prompts) and all(len(g) == 1 for g in batched)
    for p, [g] in zip(prompts, batched):
        [[single]] = generate_fp32(model, tok, [p], max_new_tokens=12)
        assert single.token_ids == g.token_ids
        assert g.num_tokens == len(g.token_ids) and g.truncated == (g.num_tokens == 12)
    # the reference: HF generate, greedy, one prompt at a time
    import torch

    for p, [g] in list(zip(prompts, batched))[:2]:
        enc = tok.apply_chat_template(p, add_generation_prompt=True, return_tensors="pt", return_dict=True)
        with torch.no_grad():
            out = model.generate(**enc, max_new_tokens=12, do_sample=False)
        assert out[0, enc["input_ids"].shape[1]:].tolist() == g.token_ids
    # results follow the caller's order, not the length-sorted batch order
    rev = generate_fp32(model, tok, prompts[::-1], max_new_tokens=12, batch_size=2)
    assert [g[0].token_ids for g in rev] == [g[0].token_ids for g in batched][::-1]


def test_string_prompts_and_training_mode_restored(tiny):
    model, tok = tiny
    texts = [tok.apply_chat_template(p, tokenize=False, add_generation_prompt=True) for p in _prompts()[:2]]
    model.train()
    a = generate(model, tok, texts, max_new_tokens=6)
    assert model.training
    model.eval()
    b = generate(model, tok, _prompts()[:2], max_new_tokens=6)
    assert not model.training
    assert [g[0].token_ids for g in a] == [g[0].token_ids for g in b]


def _marker_in(tok, ids: list[int], start: int = 3) -> tuple[str, int]:
    """A 2-token piece of the greedy text past its start, and the completion length at which it is complete."""
    for i in range(start, len(ids) - 2):
        m = tok.decode(ids[i:i + 2])
        if m.strip() and m not in tok.decode(ids[:i + 1]):
            return m, next(k for k in range(1, len(ids) + 1) if m in tok.decode(ids[:k]))
    raise AssertionError("no marker in the greedy text")


@pytest.mark.parametrize("grace", [1, 3])
def test_stop_rule_ends_grace_tokens_after_the_marker(tiny, grace):
    """No stop string cuts the text: the completion runs `grace` sampled tokens past the marker (the room in
    which the model's own EOS must come), and its text is all of its decoded tokens."""
    model, tok = tiny
    [[full]] = generate(model, tok, _prompts()[3:4], max_new_tokens=24)
    assert full.truncated and full.num_tokens == 24 and not full.stopped
    marker, k = _marker_in(tok, full.token_ids)
    [[cut]] = generate(model, tok, _prompts()[3:4], max_new_tokens=24, stop=StopRule(marker=marker, grace=grace))
    assert cut.token_ids == full.token_ids[:k + grace]
    assert cut.text == tok.decode(cut.token_ids, skip_special_tokens=True)
    assert not cut.truncated and not cut.stopped  # it ended by the rule, not with EOS
    # the same rule applied after the fact to the full sample gives the same completion (other engines)
    after = apply_stop_rule(tok, full.token_ids, {tok.eos_token_id}, StopRule(marker=marker, grace=grace), 24)
    assert (after.token_ids, after.text, after.truncated, after.stopped) == (cut.token_ids, cut.text, False, False)


def test_eos_inside_the_grace_window_is_sampled_and_kept(tiny):
    """When EOS comes within the grace tokens, the model's own EOS ends the completion (stopped)."""
    model, tok = tiny
    [[full]] = generate(model, tok, _prompts()[3:4], max_new_tokens=24)
    marker, k = _marker_in(tok, full.token_ids)
    eos = full.token_ids[k + 1]  # the second token after the marker plays EOS
    old = model.generation_config.eos_token_id
    model.generation_config.eos_token_id = [old, eos]
    try:
        [[g]] = generate(model, tok, _prompts()[3:4], max_new_tokens=24, stop=StopRule(marker=marker, grace=4))
    finally:
        model.generation_config.eos_token_id = old
    first = full.token_ids.index(eos)
    assert first >= k  # (the stand-in EOS did not occur earlier in the text)
    assert g.token_ids == full.token_ids[:first + 1] and g.stopped and not g.truncated


def test_eos_ends_a_sequence_and_is_kept(tiny):
    model, tok = tiny
    [[full]] = generate(model, tok, _prompts()[:1], max_new_tokens=16)
    eos = full.token_ids[4]
    old = model.generation_config.eos_token_id
    model.generation_config.eos_token_id = [old, eos]
    try:
        [[g]] = generate(model, tok, _prompts()[:1], max_new_tokens=16)
    finally:
        model.generation_config.eos_token_id = old
    k = full.token_ids.index(eos)
    assert g.token_ids == full.token_ids[:k + 1] and not g.truncated


def test_sampling_shapes_and_seed(tiny):
    import torch

    model, tok = tiny
    greedy = generate(model, tok, _prompts()[:2], max_new_tokens=5, num_return_sequences=3)
    assert all(len(g) == 3 and len({tuple(x.token_ids) for x in g}) == 1 for g in greedy)
    assert greedy[0][0] is not greedy[0][1]  # copies, not aliases
    torch.manual_seed(0)
    s1 = generate(model, tok, _prompts()[:2], max_new_tokens=8, temperature=1.0, num_return_sequences=4,
                  batch_size=3, top_p=0.95, min_p=0.05)
    torch.manual_seed(0)
    s2 = generate(model, tok, _prompts()[:2], max_new_tokens=8, temperature=1.0, num_return_sequences=4,
                  batch_size=3, top_p=0.95, min_p=0.05)
    assert [[x.token_ids for x in g] for g in s1] == [[x.token_ids for x in g] for g in s2]
    assert all(len(g) == 4 and all(isinstance(x, Generation) for x in g) for g in s1)
    assert len({tuple(x.token_ids) for x in s1[0]}) > 1  # a random model at T=1 does not repeat itself


def test_rejects_bad_budget(tiny):
    model, tok = tiny
    with pytest.raises(ValueError):
        generate(model, tok, _prompts()[:1], max_new_tokens=0)


def test_shared_prefix_prefill_matches_separate_prompts(tiny):
    """The system prompt runs once at batch 1; each row's last logits still equal its own forward."""
    import torch

    from reasontune.engines.prefill import MIN_SHARED_PREFIX, _cache_kw, _prefill, _shared_prefix

    model, tok = tiny
    rows = [tok.apply_chat_template(p, add_generation_prompt=True, tokenize=True, return_dict=True)["input_ids"]
            for p in _prompts()]
    assert _shared_prefix(rows) >= MIN_SHARED_PREFIX  # the path under test is taken
    with torch.inference_mode():
        _, logits, mask, pos = _prefill(model, rows, tok.pad_token_id, _cache_kw(model))
        for i, r in enumerate(rows):
            alone = model(input_ids=torch.tensor([r])).logits[0, -1]
            torch.testing.assert_close(logits[i], alone, rtol=1e-4, atol=1e-4)
            assert int(pos[i, 0]) == len(r) - 1 and int(mask[i].sum()) == len(r)


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_identical_prompts_prefill_once_and_decode_as_before(tiny, temperature, monkeypatch):
    """GRPO's rows: 3 prompts x 4 copies, interleaved. The prefill forward runs on the 3 distinct rows (not
    12), and the greedy tokens, and the sampled ones under one seed, are those of the prefill of all 12 rows."""
    import torch

    from reasontune.engines import prefill
    from reasontune.engines.generation import _decode_batch, _StopCheck

    model, tok = tiny
    prompts = [tok.apply_chat_template(p, add_generation_prompt=True, tokenize=True, return_dict=True)["input_ids"]
               for p in _prompts()[:3]]
    rows = [prompts[i % 3] for i in range(12)]
    widths = []  # batch size of every forward with more than one input token (the prefill's)

    def count(mod, args, kwargs):
        ids = kwargs.get("input_ids")
        if ids is not None and ids.size(1) > 1:
            widths.append(ids.size(0))

    def run():
        widths.clear()
        torch.manual_seed(7)
        with torch.inference_mode():
            out = _decode_batch(model, rows, tok.pad_token_id, max_new_tokens=10, sampling=(temperature, 1.0, None),
                                eos={tok.eos_token_id}, stop=_StopCheck(tok, None))
        return out, list(widths)

    hook = model.register_forward_pre_hook(count, with_kwargs=True)
    try:
        shared, shared_widths = run()
        monkeypatch.setattr(prefill, "_distinct", lambda rs: (rs, list(range(len(rs)))))  # every row its own
        alone, alone_widths = run()
    finally:
        hook.remove()
    assert max(shared_widths) == 3 and max(alone_widths) == 12
    assert shared == alone
    assert len({tuple(ids) for ids, _ in shared}) > (3 if temperature else 0)  # copies sample apart


def test_merged_lora_decodes_like_the_adapter_and_restores_the_base(tiny):
    """merged_lora swaps in W + BA*s for decoding: same logits as the unmerged adapter (fp32), same
    greedy tokens, and afterwards the very same base tensors, unchanged."""
    import torch
    from peft import LoraConfig, get_peft_model

    from reasontune.engines.generation import _merge_plan, merged_lora

    base, tok = tiny
    torch.manual_seed(1)
    model = get_peft_model(copy_model(base), LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"],
                                                        init_lora_weights=False))  # random B: a non-zero delta
    model.eval()
    assert len(_merge_plan(model)) == 2 * 3  # 2 layers x 3 targets
    before = {n: (p, p.detach().clone()) for n, p in model.named_parameters() if "base_layer" in n}
    ids = torch.tensor([[1, 5, 9, 200, 31, 7]])
    with torch.inference_mode():
        ref = model(input_ids=ids).logits
        with model.disable_adapter():
            plain = model(input_ids=ids).logits
        with merged_lora(model):
            merged = model(input_ids=ids).logits
    assert not torch.allclose(ref, plain, atol=1e-3)  # the adapter matters...
    torch.testing.assert_close(merged, ref, atol=1e-4, rtol=1e-4)  # ...and merging keeps it
    for n, p in model.named_parameters():
        if n in before:
            assert p is before[n][0] and torch.equal(p, before[n][1]), n
    # generate() merges internally; its greedy tokens match HF generate on the unmerged adapter
    [[g]] = generate(model, tok, _prompts()[:1], max_new_tokens=8, autocast_setting="false")
    enc = tok.apply_chat_template(_prompts()[0], add_generation_prompt=True, return_tensors="pt", return_dict=True)
    with torch.no_grad():
        out = model.generate(**enc, max_new_tokens=8, do_sample=False)
    assert out[0, enc["input_ids"].shape[1]:].tolist() == g.token_ids
    assert not _merge_plan(base)  # no PEFT: nothing to merge, decoding unchanged


def copy_model(m):
    import copy

    return copy.deepcopy(m)


@pytest.mark.parametrize("probs", [[0.0, 0.25, 0.0, 0.75], [0.5, 0.5, 0.0, 0.0], [0.0, 0.0, 0.0, 2.0], [0.1, 0.2, 0.3, 0.4]])
def test_sample_index_draws_in_proportion_and_never_a_zero(probs):
    import torch

    from reasontune.engines.generation import sample_index

    torch.manual_seed(0)
    p = torch.tensor([probs]).repeat(20000, 1)  # unnormalised rows are fine
    counts = torch.bincount(sample_index(p), minlength=4).float() / 20000
    expected = torch.tensor(probs) / sum(probs)
    assert torch.all(counts[expected == 0] == 0)
    torch.testing.assert_close(counts, expected, atol=0.015, rtol=0)


@pytest.mark.parametrize("lengths,max_new,max_length,expected", [
    ([10, 20, 30], 8, None, [8, 8, 8]),  # no cap
    ([10, 20, 30], 8, 100, [8, 8, 8]),  # the cap does not bind
    ([10, 20, 30], 8, 25, [8, 5, 0]),  # prompt + completion within 25: the third prompt fills it
    ([25], 8, 25, [0]),
])
def test_completion_budgets_cap_prompt_plus_completion(lengths, max_new, max_length, expected):
    from reasontune.engines.generation import completion_budgets

    assert completion_budgets(lengths, max_new, max_length) == expected


def test_max_length_caps_prompt_plus_completion_per_row(tiny):
    """Issue 35, item 3: vLLM ends a sequence at max_model_len (model.max_seq_length) tokens, prompt included; our
    decode given the same max_length ends each row there too, rows of different lengths in one batch, and a
    prompt that fills it gets an empty, truncated completion."""
    from functools import partial

    from reasontune.models.prompting import render_chat

    model, tok = tiny
    prompts = _prompts()
    lengths = [len(tok(render_chat(tok, p), add_special_tokens=False)["input_ids"]) for p in prompts]
    cap = sorted(lengths)[-2] + 3  # the longest prompt fills it; the second longest has 3 tokens left
    generate_fp32 = partial(generate, model, tok, autocast_setting="false", max_new_tokens=12, batch_size=5)
    capped, free = generate_fp32(prompts, max_length=cap), generate_fp32(prompts)
    for n, [c], [f] in zip(lengths, capped, free):
        room = max(0, min(12, cap - n))
        assert c.token_ids == f.token_ids[:room] and c.num_tokens == room
        assert c.truncated == (not c.stopped)  # no stop rule: EOS, or the cap
    assert min(len(c.token_ids) for [c] in capped) == 0 and max(len(c.token_ids) for [c] in capped) == 12
