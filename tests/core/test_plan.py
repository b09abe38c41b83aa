"""Planning errors: each a typed error with its exact message; nothing is read when the plan fails."""

import pytest
import torch

from adapters.core import (
    DtypeError,
    MissingSourceError,
    PlanError,
    ShapeMismatchError,
    SpecError,
    TensorInfo,
    UnusedSourceError,
    load,
    open_source,
    plan,
)
from adapters.demo import TOY_SPEC, toy_dims, write_toy_checkpoint


def table(state):
    return {k: TensorInfo(tuple(v.shape), v.dtype) for k, v in state.items()}


def plan_error(tab, model, config, **kw):
    with pytest.raises(PlanError) as e:
        plan(TOY_SPEC, tab, model, dims=toy_dims(config), **kw)
    return e


def test_clean_plan(toy_state, meta_toy, toy_config):
    p = plan(TOY_SPEC, table(toy_state), meta_toy, dims=toy_dims(toy_config))
    assert len(p.units) == 1 + 3 * 7 + 2
    assert sorted(p.targets) == sorted(k for k in meta_toy.state_dict() if "inv_freq" not in k)
    assert [k for k, _ in p.ignored] == [f"model.layers.{i}.self_attn.rotary_emb.inv_freq" for i in range(3)]
    assert [k for k, _ in p.kept] == [f"layers.{i}.attn.inv_freq" for i in range(3)]
    qkv = next(u for u in p.units if u.targets == ("layers.1.attn.qkv.weight",))
    assert qkv.sources == tuple(f"model.layers.1.self_attn.{x}_proj.weight" for x in "qkv")


def test_missing_target(toy_state, meta_toy, toy_config):
    tab = {k: v for k, v in table(toy_state).items() if "down_proj" not in k}
    e = plan_error(tab, meta_toy, toy_config)
    assert type(e.value) is MissingSourceError
    assert str(e.value) == (
        "spec 'toy-hf->toy' leaves 3 tensors of ToyModel without a source\n"
        "  missing:   layers.{0..2}.mlp.down.weight\n"
        "  hint: add a rule that produces them, or keep=[...] them with a reason if the model computes them itself"
    )


def test_incomplete_merge_group(toy_state, meta_toy, toy_config):
    tab = table(toy_state)
    del tab["model.layers.1.self_attn.k_proj.weight"]
    e = plan_error(tab, meta_toy, toy_config)
    assert type(e.value) is MissingSourceError
    assert str(e.value).splitlines()[:3] == [
        "spec 'toy-hf->toy' leaves 1 tensor of ToyModel without a source",
        "  rule 3 lacks: model.layers.1.self_attn.k_proj.weight  (rule: model.layers.{layer}.self_attn.q_proj.weight, "
        "model.layers.{layer}.self_attn.k_proj.weight, model.layers.{layer}.self_attn.v_proj.weight -> "
        "layers.{layer}.attn.qkv.weight [Concat(dim=0, sizes=('q_dim', 'kv_dim', 'kv_dim'))])",
        "  missing:   layers.1.attn.qkv.weight",
    ]


def test_unused_source(toy_state, meta_toy, toy_config):
    tab = table(toy_state) | {f"model.layers.{i}.extra.bias": TensorInfo((4,), torch.float32) for i in range(2)}
    e = plan_error(tab, meta_toy, toy_config)
    assert type(e.value) is UnusedSourceError
    assert str(e.value) == (
        "spec 'toy-hf->toy' uses 2 tensors of source in no rule\n"
        "  unused:    model.layers.{0,1}.extra.bias\n"
        "  hint: map them with a rule, or ignore=[...] them with a reason if they are deliberately dropped"
    )


def test_source_whose_target_does_not_exist(toy_state, meta_toy, toy_config):
    tab = table(toy_state) | {"model.layers.3.mix": TensorInfo((1, 1, 32), torch.float32)}
    e = plan_error(tab, meta_toy, toy_config)
    assert type(e.value) is UnusedSourceError
    assert str(e.value).splitlines()[1] == "  no target: model.layers.3.mix -> layers.3.mix (not in ToyModel)"


def test_shape_mismatch(toy_state, meta_toy, toy_config):
    tab = table(toy_state) | {
        f"model.layers.{i}.mlp.down_proj.weight": TensorInfo((32, 40), torch.float32) for i in range(3)
    }
    e = plan_error(tab, meta_toy, toy_config)
    assert type(e.value) is ShapeMismatchError
    assert str(e.value) == (
        "spec 'toy-hf->toy' would give 3 tensors of ToyModel the wrong shape\n"
        "  rule 6 (rename) would produce [32, 40] for layers.{0..2}.mlp.down.weight, but the model has [32, 48]\n"
        "    sources: model.layers.{0..2}.mlp.down_proj.weight [32, 40]\n"
        "  hint: the checkpoint and the model config disagree; build the model from the checkpoint's config"
    )


def test_op_cannot_run_on_source_shapes(toy_state, meta_toy, toy_config):
    tab = table(toy_state) | {
        f"model.layers.{i}.self_attn.k_proj.weight": TensorInfo((32, 32), torch.float32) for i in range(3)
    }
    e = plan_error(tab, meta_toy, toy_config)
    assert type(e.value) is ShapeMismatchError
    assert str(e.value).splitlines()[1] == (
        "  rule 3 cannot run on model.layers.{0..2}.self_attn.q_proj.weight [32, 32], "
        "model.layers.{0..2}.self_attn.k_proj.weight [32, 32], model.layers.{0..2}.self_attn.v_proj.weight [16, 32]: "
        "Concat(dim=0, sizes=(32, 16, 16)) expects parts of [32, 16, 16] along dim 0, got [32, 32, 16]"
    )


def test_dtype_problem(toy_state, meta_toy, toy_config):
    tab = table(toy_state) | {"lm_head.weight": TensorInfo((96, 32), torch.int64)}
    e = plan_error(tab, meta_toy, toy_config)
    assert type(e.value) is DtypeError
    assert str(e.value) == (
        "spec 'toy-hf->toy' cannot cast 1 tensor of source to the target dtype\n"
        "  lm_head.weight: int64 cannot become float32 (head.weight)\n"
        "  hint: integer, boolean and floating-point tensors do not convert into each other; check which key the rule maps"
    )


def test_all_problems_reported_at_once(toy_state, meta_toy, toy_config):
    tab = table(toy_state) | {"junk": TensorInfo((1,), torch.float32)}
    del tab["lm_head.weight"]
    e = plan_error(tab, meta_toy, toy_config)
    assert type(e.value) is PlanError
    assert str(e.value) == (
        "spec 'toy-hf->toy' does not fit ToyModel (2 kinds of problem)\n"
        "- leaves 1 tensor of ToyModel without a source\n"
        "    missing:   head.weight\n"
        "- uses 1 tensor of source in no rule\n"
        "    unused:    junk\n"
        "  hint: add a rule that produces them, or keep=[...] them with a reason if the model computes them itself\n"
        "  hint: map them with a rule, or ignore=[...] them with a reason if they are deliberately dropped"
    )
    assert len(e.value.problems) == 2


def test_missing_dims_is_a_spec_error(toy_state, meta_toy):
    with pytest.raises(SpecError, match="needs the size 'q_dim'"):
        plan(TOY_SPEC, table(toy_state), meta_toy, dims={})


@pytest.mark.parametrize("fmt", ["sharded", "pth"])
def test_failed_plan_reads_no_tensor_data(tmp_path, toy_state, meta_toy, toy_config, fmt):
    del toy_state["model.norm.weight"]
    path = write_toy_checkpoint(tmp_path, toy_state, fmt)
    with open_source(path) as reader:
        calls = []
        reader._read = lambda key: calls.append(key)  # any data read would be recorded here
        with pytest.raises(MissingSourceError):
            load(TOY_SPEC, reader, meta_toy, dims=toy_dims(toy_config))
        assert calls == [] and reader.bytes_read == 0 and reader.tensors_read == 0
    assert all(p.device.type == "meta" for p in meta_toy.parameters())
