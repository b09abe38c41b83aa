import pytest

from adapters.core import Concat, Reshape, Spec, SpecError, Split, Transpose, ignore, rule


def test_rule_with_placeholder_on_one_side():
    with pytest.raises(SpecError) as e:
        rule("model.layers.{layer}.mlp.up_proj.weight", "transformer.layers.{i}.mlp.dense_h_to_4h.weight")
    assert str(e.value) == (
        'rule "model.layers.{layer}.mlp.up_proj.weight -> transformer.layers.{i}.mlp.dense_h_to_4h.weight" uses '
        "placeholder {i} on one side only; every pattern of a rule must use the same placeholders"
    )


def test_rule_arity_must_match_targets():
    with pytest.raises(SpecError) as e:
        rule(["a.{l}.q", "a.{l}.k"], ["b.{l}.x", "b.{l}.y"], Concat(0))
    assert (
        str(e.value)
        == 'rule "a.{l}.q, a.{l}.k -> b.{l}.x, b.{l}.y [Concat(dim=0)]" turns 2 source(s) into 1 tensor(s) but names 2 target(s)'
    )
    with pytest.raises(SpecError, match="turns 1 source"):
        rule("a", ["b", "c"], Transpose())


def test_unsized_split_takes_its_count_from_targets():
    r = rule("a.{l}.gate_up", ["b.{l}.gate", "b.{l}.up"], Split(0), Transpose())
    assert r.ops[0] == Split(0, parts=2)
    with pytest.raises(SpecError, match="cannot tell how many parts"):
        rule("a", ["b", "c"], Split(0), Concat(0), Split(0))


def test_sources_of_one_rule_must_be_distinct():
    with pytest.raises(SpecError) as e:
        rule(["x.{l}.w", "x.{l}.w"], "y.{l}.w", Concat(0))
    assert (
        str(e.value)
        == 'rule "x.{l}.w, x.{l}.w -> y.{l}.w [Concat(dim=0)]" has two source patterns that match the same key: x.{l}.w and x.{l}.w'
    )


def test_overlapping_rules_are_refused():
    with pytest.raises(SpecError) as e:
        Spec("s", (rule("layers.{l}.w", "a.{l}.w"), rule("layers.0.w", "b.w")))
    assert str(e.value) == (
        "spec 's': rules 0 and 1 both match source keys like layers.{l}.w / layers.0.w\n"
        "  rule 0: layers.{l}.w -> a.{l}.w\n"
        "  rule 1: layers.0.w -> b.w\n"
        "  hint: make the patterns disjoint; a key must belong to exactly one rule"
    )
    with pytest.raises(SpecError, match="both match target keys"):
        Spec("s", (rule("x.{l}", "t.{l}"), rule("y", "t.3")))


def test_ignore_needs_a_reason_and_keep_must_not_overlap_targets():
    with pytest.raises(SpecError) as e:
        ignore("x.inv_freq", " ")
    assert str(e.value) == "ignore entry x.inv_freq needs a reason"
    with pytest.raises(SpecError) as e:
        Spec("s", (rule("a.{l}", "b.{l}"),), keep=(ignore("b.0", "computed"),))
    assert str(e.value) == "spec 's': keep entry b.0 overlaps the targets of rule 0: a.{l} -> b.{l}"


def test_inverse_spec():
    spec = Spec(
        "fwd",
        (rule(["q.{l}", "k.{l}"], "qk.{l}", Concat(0, sizes=(4, 2))), rule("m.{l}", "n.{l}", Reshape((1, -1), (-1,)))),
        ignore=(ignore("f.{l}", "dropped"),),
        keep=(ignore("buf.{l}", "computed"),),
    )
    inv = spec.inverse()
    assert inv.name == "fwd (inverse)"
    assert [str(r) for r in inv.rules] == [
        "qk.{l} -> q.{l}, k.{l} [Split(dim=0, sizes=(4, 2))]",
        "n.{l} -> m.{l} [Reshape(src=(-1,), dst=(1, -1))]",
    ]
    assert [str(g.pattern) for g in inv.ignore] == ["buf.{l}"] and [str(g.pattern) for g in inv.keep] == ["f.{l}"]
    assert spec.renamed("other").rules == spec.rules
    assert spec.describe().splitlines()[0] == "spec 'fwd': 2 rules"
