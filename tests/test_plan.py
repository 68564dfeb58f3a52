"""Plans: JSON round trip, validation, resolution, presets, and step gating driven by the timestep."""

import json

import pytest
import torch

import accel
from accel.plan import PRESETS, FP8Config, Plan, PlanError, Rule
from tiny_models import tiny_wan


@pytest.mark.parametrize("name", list(PRESETS))
def test_presets_round_trip(name, tmp_path):
    path = tmp_path / f"{name}.json"
    PRESETS[name].save(path)
    assert Plan.load(path) == PRESETS[name]


def test_custom_plan_round_trip():
    plan = Plan((Rule(FP8Config("head", False), "any"), Rule(None, "cross", blocks=(0, -1), steps=(0.5, 1.0)),
                 Rule(FP8Config(min_keys=4096, smooth_q=True, hadamard=True), "self", blocks=(2,))))
    assert Plan.from_dict(json.loads(json.dumps(plan.to_dict()))) == plan


@pytest.mark.parametrize("data, field", [
    ({"format": "accel-plan", "version": 1, "rules": [{"fp8": None, "atention": "self"}]}, "rules[0].atention"),
    ({"format": "accel-plan", "version": 1, "rules": [{"fp8": {"granularity": "block"}}]}, "rules[0].fp8.granularity"),
    ({"format": "accel-plan", "version": 1, "rules": [{"fp8": {"smooth_k": "yes"}}]}, "rules[0].fp8.smooth_k"),
    ({"format": "accel-plan", "version": 1, "rules": [{"fp8": {"smooth_v": 1}}]}, "rules[0].fp8.smooth_v"),
    ({"format": "accel-plan", "version": 1, "rules": [{"fp8": {"min_keys": -1}}]}, "rules[0].fp8.min_keys"),
    ({"format": "accel-plan", "version": 1, "rules": [{"fp8": {"hadamard": "on"}}]}, "rules[0].fp8.hadamard"),
    ({"format": "accel-plan", "version": 1, "rules": [{"fp8": {"smooth_q": None}}]}, "rules[0].fp8.smooth_q"),
    ({"format": "accel-plan", "version": 1, "rules": [{"fp8": {"min_keys": 8192.0}}]}, "rules[0].fp8.min_keys"),
    ({"format": "accel-plan", "version": 1, "rules": [{"fp8": None, "steps": [0.5, 0.2]}]}, "rules[0].steps"),
    ({"format": "accel-plan", "version": 1, "rules": [{"fp8": None, "edge_blocks": 0.9}]}, "rules[0].edge_blocks"),
    ({"format": "accel-plan", "version": 1, "rules": [{"fp8": None, "blocks": ["1"]}]}, "rules[0].blocks"),
    ({"format": "accel-plan", "version": 1, "rules": [{"attention": "self"}]}, "rules[0].fp8"),
    ({"format": "accel-plan", "version": 2, "rules": []}, "version"),
    ({"format": "other", "version": 1, "rules": []}, "format"),
    ({"format": "accel-plan", "version": 1, "rules": {}}, "rules"),
])
def test_validation_names_the_field(data, field):
    with pytest.raises(PlanError, match=field.replace("[", r"\[").replace("]", r"\]")):
        Plan.from_dict(data)


def test_bad_json_file(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text("{not json")
    with pytest.raises(PlanError, match="not valid JSON"):
        Plan.load(path)


def test_later_rules_win_and_steps_split():
    token, head = FP8Config("token"), FP8Config("head")
    plan = Plan((Rule(token), Rule(head, blocks=(3,)), Rule(None, steps=(0.0, 0.25))))
    s = plan.schedule("self", 3, 10)
    assert s.pieces == ((0.0, 0.25, None), (0.25, 1.0, head))
    assert plan.schedule("self", 2, 10).at(0.5) == token
    assert plan.schedule("cross", 2, 10).at(0.5) is None  # rules default to self-attention


def test_presets_are_what_the_readme_says():
    n = 40
    speed = [PRESETS["speed"].schedule("self", b, n).at(0.5) for b in range(n)]
    assert all(c == FP8Config("head", True) for c in speed)
    balanced = [PRESETS["balanced"].schedule("self", b, n).at(0.5) for b in range(n)]
    assert balanced[:2] == [None, None] and balanced[-2:] == [None, None]  # ceil(5% of 40) = 2
    assert all(c == FP8Config("head", True, True) for c in balanced[2:-2])
    quality = PRESETS["quality"].schedule("self", 10, n)
    assert quality.at(0.1) is None and quality.at(0.5) == FP8Config("token", True, True) and quality.at(0.95) is None
    assert all(PRESETS["balanced"].schedule(k, 10, n).at(0.5) is None for k in ("cross", "image"))


def test_step_gating_follows_the_timestep_under_cfg():
    """Wan's pipeline calls the transformer twice per step (cond, uncond); the plan must give both
    the same numerics, switching on the timestep's progress, not on a call count."""
    from accel.pipelines.tiny import tiny_wan_pipeline

    pipe = tiny_wan_pipeline()
    seen = []
    with accel.apply(pipe, preset="quality", backend="reference"):
        processor = pipe.transformer.attn_processors["blocks.1.attn1.processor"]
        spy = pipe.transformer.register_forward_pre_hook(
            lambda m, a, kw: seen.append((float(kw["timestep"].flatten()[0]), processor.active["self"])),
            with_kwargs=True)
        pipe(prompt="a fox", negative_prompt="blur", height=32, width=32, num_frames=5, num_inference_steps=10,
             guidance_scale=5.0, output_type="latent")
        spy.remove()
    assert len(seen) == 20  # two forwards per step
    for (t1, a1), (t2, a2) in zip(seen[::2], seen[1::2]):
        assert t1 == t2 and a1 == a2
        progress = 1 - t1 / 1000
        expect_fp8 = 0.2 <= progress < 0.9
        assert (a1 is not None) == expect_fp8, (progress, a1)
    assert any(a is None for _, a in seen) and any(a is not None for _, a in seen)
    assert not pipe.transformer._forward_pre_hooks  # remove() took the clock off


def test_apply_plan_file_and_two_experts(tmp_path):
    from diffusers import WanPipeline

    path = tmp_path / "plan.json"
    Plan((Rule(FP8Config("head")), Rule(None, blocks=(0,)))).save(path)
    pipe = WanPipeline(tokenizer=None, text_encoder=None, vae=None, scheduler=None,
                       transformer=tiny_wan(), transformer_2=tiny_wan(seed=2))
    with accel.apply(pipe, plan=str(path)) as handle:
        assert handle.plan == Plan.load(path)
        for t in (pipe.transformer, pipe.transformer_2):
            procs = t.attn_processors
            assert not isinstance(procs["blocks.0.attn1.processor"], accel.WanFP8AttnProcessor)
            assert procs["blocks.1.attn1.processor"].active["self"].granularity == "head"


def test_unknown_preset():
    with pytest.raises(ValueError, match="preset must be one of"):
        accel.apply(tiny_wan(), preset="fastest")
    with pytest.raises(FileNotFoundError):
        accel.apply(tiny_wan(), plan="/nonexistent/plan.json")


def _outputs(model, timesteps):
    from tiny_models import wan_inputs

    outs = []
    for t in timesteps:
        inputs = {**wan_inputs(), "timestep": torch.tensor([t])}
        with torch.no_grad():
            outs.append(model(**inputs, return_dict=False)[0])
    return outs


def test_step_plans_under_regional_compilation():
    """Per-block compilation keeps step gating: one graph per numerics, outputs as in eager."""
    from accel.testing import rel_l2

    timesteps = (950, 500, 50, 500)  # progress 0.05 (bf16), 0.5 (FP8), 0.95 (bf16), 0.5 again
    eager_model = tiny_wan(layers=6)
    with accel.apply(eager_model, preset="quality", backend="reference"):
        eager = _outputs(eager_model, timesteps)
    stock = _outputs(tiny_wan(layers=6), timesteps)
    assert rel_l2(eager[0], stock[0]) == 0 and rel_l2(eager[1], stock[1]) > 0  # gating did something
    model = tiny_wan(layers=6)
    accel.apply(model, preset="quality", backend="reference")
    torch._dynamo.reset()
    model.compile_repeated_blocks(fullgraph=True, backend="aot_eager")
    for got, want in zip(_outputs(model, timesteps), eager):
        assert rel_l2(got, want) < 1e-6


def test_step_plans_refuse_whole_model_compilation_clearly():
    model = tiny_wan(layers=6)
    accel.apply(model, preset="quality", backend="reference")
    torch._dynamo.reset()
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    with pytest.raises(Exception, match="compile_repeated_blocks"):
        _outputs(compiled, (500,))
