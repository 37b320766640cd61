"""The LLaDA low-confidence remasking sampler."""

import pytest
import torch
from rl_helpers import MASK_ID, VOCAB, tiny_model

from hsp.rl.config import RLConfig
from hsp.rl.rollout import sampler_config
from hsp.rl.sampler import SamplerConfig, generate, tokens_per_step
from hsp.rl.tasks import MASK, get_task


class _Recorder(torch.nn.Module):
    """Wraps a DiffusionLM and records the sequences it is called on."""

    def __init__(self, model):
        super().__init__()
        self.model, self.mask_id, self.calls = model, model.mask_id, []

    def forward(self, x):
        self.calls.append(x.clone())
        return self.model(x)


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_rl_sampler_valid_tokens_and_prompt_respected(temperature):
    rec = _Recorder(tiny_model())
    prompts = torch.randint(0, MASK_ID, (5, 3), generator=torch.Generator().manual_seed(0))
    cfg = SamplerConfig(gen_length=8, block_length=4, steps=4, temperature=temperature)
    out = generate(rec, prompts, cfg, torch.Generator().manual_seed(1))
    assert out.shape == (5, 8)
    assert ((out >= 0) & (out < VOCAB) & (out != MASK_ID)).all()
    assert len(rec.calls) == 4
    for x in rec.calls:
        assert torch.equal(x[:, :3], prompts)  # prompt is never masked or changed
    # block order: while the first block has masks, the second block is fully masked
    first, second = rec.calls[1][:, 3:7], rec.calls[1][:, 7:]
    assert (first == MASK_ID).sum(1).eq(2).all() and (second == MASK_ID).all()
    assert (rec.calls[2][:, 3:7] != MASK_ID).all()


def test_rl_sampler_greedy_is_deterministic_and_commits_confident_first():
    model = tiny_model(3)
    prompts = torch.randint(0, MASK_ID, (4, 3), generator=torch.Generator().manual_seed(2))
    cfg = SamplerConfig(gen_length=6, block_length=6, steps=6, temperature=0.0)
    a = generate(model, prompts, cfg, torch.Generator().manual_seed(0))
    b = generate(model, prompts, cfg, torch.Generator().manual_seed(99))
    assert torch.equal(a, b)
    # the first committed position is the most confident prediction of the all-masked input
    rec = _Recorder(model)
    generate(rec, prompts, cfg, torch.Generator())
    probs = torch.softmax(model(rec.calls[0]).double(), -1)[:, 3:].max(-1).values
    committed = (rec.calls[1][:, 3:] != MASK_ID).float().argmax(1)
    assert torch.equal(committed, probs.argmax(1))


def test_rl_sampler_temperature_samples_vary():
    model = tiny_model(4)
    prompts = torch.zeros(64, 3, dtype=torch.long)
    cfg = SamplerConfig(gen_length=4, block_length=4, steps=4, temperature=2.0)
    out = generate(model, prompts, cfg, torch.Generator().manual_seed(0))
    assert len({tuple(r.tolist()) for r in out}) > 1


def test_rl_sampler_config_errors_and_schedule():
    assert tokens_per_step(7, 3) == [3, 2, 2]
    with pytest.raises(ValueError, match="multiple of block_length"):
        SamplerConfig(gen_length=10, block_length=4, steps=4)
    with pytest.raises(ValueError, match="multiple of the 2 blocks"):
        SamplerConfig(gen_length=8, block_length=4, steps=3)
    with pytest.raises(ValueError, match="steps per block"):
        SamplerConfig(gen_length=4, block_length=4, steps=8)


@pytest.mark.parametrize("task_name", ["addition", "countdown", "sudoku4"])
def test_rl_sampler_default_steps_come_from_the_task(task_name):
    task = get_task(task_name)
    default = sampler_config(RLConfig(task=task_name), task, 0.0)
    assert default.steps == task.default_sample_steps and default.block_length == task.response_len
    assert sampler_config(RLConfig(task=task_name, sample_steps=1), task, 0.0).steps == 1  # an explicit value wins


def test_rl_sampler_one_token_per_step_for_addition():
    task = get_task("addition")
    cfg = sampler_config(RLConfig(task="addition"), task, 0.0)
    rec = _Recorder(tiny_model(5, vocab=task.vocab_size, mask_id=MASK))
    generate(rec, task.make_split("train", 4, 0).prompts, cfg, torch.Generator())
    masked = [int((x[:, task.prompt_len:] == MASK).sum(1).max()) for x in rec.calls]
    assert masked == [3, 2, 1]  # each model call commits one digit, seeing the digits committed before it
