"""RenamedReader: renamed keys and reshaped views over another reader, read through with exact byte counts."""

import pytest
import torch

from adapters.core import ReadError, RenamedReader, open_source


@pytest.fixture
def pth(tmp_path):
    state = {"a.time_faaaa": torch.arange(24.0).reshape(1, 1, 4, 6), "a.w": torch.arange(12.0).reshape(3, 4),
             "b": torch.ones(5, dtype=torch.bfloat16)}  # fmt: skip
    torch.save(state, tmp_path / "m.pth")
    return tmp_path / "m.pth", state


def test_keys_infos_and_reads_under_the_new_names(pth):
    path, state = pth
    inner = open_source(path)
    reader = RenamedReader(inner, {"a.time_faaaa": "a.r_k", "a.w": "a.w1"}, shapes={"a.r_k": (4, 6)})
    assert sorted(reader.keys()) == ["a.r_k", "a.w1", "b"] and reader.path == str(path)
    assert (reader.info("a.r_k").shape, reader.info("a.r_k").dtype) == ((4, 6), torch.float32)
    assert (reader.info("b").shape, reader.info("b").dtype) == ((5,), torch.bfloat16)
    assert reader.bytes_read == 0 and inner.bytes_read == 0  # headers only so far
    assert torch.equal(reader.read("a.r_k"), state["a.time_faaaa"].reshape(4, 6))
    assert torch.equal(reader.read("b"), state["b"])
    assert reader.bytes_read == inner.bytes_read == 24 * 4 + 5 * 2  # both count, and nothing else was read
    assert reader.tensors_read == inner.tensors_read == 2


def test_slices_of_renamed_and_reshaped_tensors(pth):
    path, state = pth
    with RenamedReader(open_source(path), {"a.time_faaaa": "a.r_k", "a.w": "a.w1"}, shapes={"a.r_k": (4, 6)}) as reader:
        assert torch.equal(reader.read_slice("a.w1", (slice(1, 3),)), state["a.w"][1:3])
        assert torch.equal(
            reader.read_slice("a.r_k", (slice(2, 4), slice(0, 3))), state["a.time_faaaa"].reshape(4, 6)[2:4, :3]
        )
        assert reader.bytes_read == (2 * 4 + 2 * 3) * 4
        assert reader.inner.bytes_read == (2 * 4 + 24) * 4  # a reshaped tensor is read whole, then cut


def test_old_names_are_gone_and_close_reaches_the_inner_reader(pth):
    path, _ = pth
    reader = RenamedReader(open_source(path), {"a.w": "a.w1"})
    with pytest.raises(ReadError) as e:
        reader.read("a.w")
    assert str(e.value) == f"{path} has no tensor 'a.w'"
    reader.close()
    assert reader.inner._tensors == {}  # TorchReader.close dropped its file mapping


@pytest.mark.parametrize(
    "renames, shapes, message",
    [
        ({"a.x": "a.y", "a.z": "a.y"}, None, "cannot rename a.x, a.z: the file has no such tensor\n"
                                              "  hint: build the renames from this reader's own keys()"),
        ({"a.w": "b"}, None, "renaming gives 1 name(s) to more than one tensor\n"
                             "  b: a.w, b\n"
                             "  hint: the file holds both spellings of these tensors; keep one of them"),
        ({}, {"a.r_k": (4, 6)}, "cannot reshape 'a.r_k': no tensor has that name after renaming\n"
                                "  hint: name tensors in shapes= by their exposed (renamed) keys"),
        ({}, {"a.w": (5, 2)}, "cannot view 'a.w' of shape [3, 4] as [5, 2]\n"
                              "  hint: a reshape keeps the element count (12 here)"),
    ],
)  # fmt: skip
def test_bad_renames_are_refused_before_reading(pth, renames, shapes, message):
    path, _ = pth
    inner = open_source(path)
    with pytest.raises(ReadError) as e:
        RenamedReader(inner, renames, shapes=shapes)
    assert str(e.value) == f"{path}: {message}"
    assert inner.bytes_read == 0
