import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adapters.core import KeyPattern, SpecError, compress_keys, natural_key, summarize_keys
from adapters.core.keys import _elements, _intersects


@pytest.mark.parametrize(
    "pattern, key, bindings",
    [
        ("model.layers.{layer}.mlp.w", "model.layers.0.mlp.w", {"layer": 0}),
        ("model.layers.{layer}.mlp.w", "model.layers.31.mlp.w", {"layer": 31}),
        ("model.layers.{layer}.mlp.w", "model.layers.07.mlp.w", None),  # no leading zeros
        ("model.layers.{layer}.mlp.w", "model.layers.x.mlp.w", None),
        ("model.layers.{layer}.mlp.w", "model.layers.1.mlp.w.extra", None),
        ("model.layers.{layer}.mlp.w", "model_layers.1.mlp.w", None),  # dots are literal
        ("e.{expert}.l.{layer}", "e.3.l.12", {"expert": 3, "layer": 12}),
        ("a.{i}.b.{i}", "a.2.b.2", {"i": 2}),
        ("a.{i}.b.{i}", "a.2.b.3", None),  # one name binds one value
        ("layers.{i+1}.ln", "layers.4.ln", {"i": 3}),
        ("layers.{i+1}.ln", "layers.0.ln", None),  # i would be -1
        ("layers.{i-2}.ln", "layers.0.ln", {"i": 2}),
        ("w[0]+x", "w[0]+x", {}),  # regex characters are literal
    ],
)
def test_match(pattern, key, bindings):
    assert KeyPattern.parse(pattern).match(key) == bindings


def test_format_round_trips_and_offsets():
    p = KeyPattern.parse("layers.{i+1}.input_layernorm.weight")
    assert p.format({"i": 0}) == "layers.1.input_layernorm.weight"
    assert p.match(p.format({"i": 9})) == {"i": 9}
    assert KeyPattern.parse("layers.{i-1}.w").format({"i": 0}) is None


@pytest.mark.parametrize(
    "text, message",
    [
        ("", "key pattern must be a non-empty string, got ''"),
        ("layers.{layer.w", "key pattern 'layers.{layer.w' has a malformed placeholder near 'layers.{layer.w'\n"
         "  hint: placeholders are {name}, {name+1} or {name-1}, with name a Python identifier"),
        ("a.{i}{j}", "key pattern 'a.{i}{j}' has two adjacent placeholders {i}{j}; their digits could split either way"),
    ],
)  # fmt: skip
def test_bad_patterns(text, message):
    with pytest.raises(SpecError) as e:
        KeyPattern.parse(text)
    assert str(e.value) == message


@pytest.mark.parametrize(
    "a, b, overlap",
    [
        ("layers.{l}.w", "layers.{l}.w", True),
        ("layers.{l}.w", "layers.0.w", True),
        ("layers.{l}.w", "layers.12.w", True),
        ("layers.{l}.w", "layers.{l}.b", False),
        ("layers.{l}.w", "layers.x.w", False),
        ("blocks.{l}.att.v0", "blocks.0.att.v0", True),
        ("a.{i}.b", "a.{i}{j}".replace("{j}", "1") + ".b", True),
        ("x.{i}5", "x.1{i}", True),
        ("x.{i}.y", "x.{i}.y.z", False),
        # A positive offset means a number of at least 1: first item and the rest as two rules (Mixtral experts).
        ("experts.{e+1}.w", "experts.0.w", False),
        ("experts.{e+1}.w", "experts.1.w", True),
        ("experts.{e+1}.w", "experts.10.w", True),
        ("experts.{e+1}.w", "experts.{e}.w", True),
        ("experts.{e+1}.w", "experts.{e-1}.w", True),
        ("x.{e+1}", "x.{i}0", True),  # "10"
    ],
)
def test_overlap(a, b, overlap):
    pa, pb = KeyPattern.parse(a), KeyPattern.parse(b)
    assert pa.overlaps(pb) is overlap
    assert pb.overlaps(pa) is overlap


def test_natural_sort():
    keys = ["layers.10.w", "layers.2.w", "layers.1.w"]
    assert sorted(keys, key=natural_key) == ["layers.1.w", "layers.2.w", "layers.10.w"]


def test_compress_ranges():
    keys = [f"layers.{i}.mlp.w" for i in range(32)] + ["embed.weight"]
    assert compress_keys(keys) == ["embed.weight", "layers.{0..31}.mlp.w"]
    assert compress_keys(["l.0.w", "l.1.w", "l.5.w", "l.6.w", "l.7.w"]) == ["l.{0,1,5..7}.w"]
    assert compress_keys(["l.3.w"]) == ["l.3.w"]


def test_compress_never_claims_absent_keys():
    # experts x layers that do not form a full product are split, not over-claimed
    keys = ["l.0.e.0", "l.0.e.1", "l.1.e.0"]
    assert compress_keys(keys) == ["l.0.e.{0,1}", "l.1.e.0"]
    full = [f"l.{i}.e.{j}" for i in range(2) for j in range(3)]
    assert compress_keys(full) == ["l.{0,1}.e.{0..2}"]


def test_summarize_caps():
    keys = [f"k{i}.x" for i in range(0, 40, 2)]
    text = summarize_keys(keys, limit=1)
    assert text == "k{0,2,4,6,8,10,12,14,16,18,20,22,24,26,28,30,32,34,36,38}.x"
    assert summarize_keys(["a", "b", "c"], limit=2) == "a, b, ... and 1 more"


_PIECES = st.lists(st.sampled_from(["a", "b", ".", "0", "1", "{i}", "{j+1}"]), min_size=1, max_size=6)


@settings(max_examples=300, deadline=None)
@given(_PIECES, _PIECES)
def test_overlap_prefilter_agrees_with_the_automaton(a, b):
    # The literal head/tail check only skips work: it must never decide differently from the full product.
    texts = ["".join(p) for p in (a, b)]
    try:
        pa, pb = (KeyPattern.parse(t) for t in texts)
    except SpecError:  # adjacent placeholders
        return
    assert pa.overlaps(pb) is _intersects(_elements(pa), _elements(pb))
