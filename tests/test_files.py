import os

import pytest

from sdcaff.errors import SdcaffError
from sdcaff.files import atomic_dir, atomic_path, ensure_outside


@pytest.mark.reliability("interruption")
def test_atomic_path_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out" / "a.csv"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("boom")
    assert not target.exists() and list((tmp_path / "out").iterdir()) == []


def test_atomic_path_writes_with_ordinary_permissions(tmp_path):
    target = tmp_path / "a.csv"
    with atomic_path(target) as tmp:
        tmp.write_text("whole")
    umask = os.umask(0)
    os.umask(umask)
    assert target.read_text() == "whole"
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask


@pytest.mark.reliability("interruption")
def test_atomic_dir_replaces_only_on_success(tmp_path):
    target = tmp_path / "d"
    with atomic_dir(target) as tmp:
        (tmp / "x").write_text("1")
    with pytest.raises(RuntimeError):
        with atomic_dir(target) as tmp:
            (tmp / "y").write_text("2")
            raise RuntimeError("boom")
    assert sorted(p.name for p in target.iterdir()) == ["x"]
    assert [p.name for p in tmp_path.iterdir()] == ["d"]


@pytest.mark.reliability("read-only corpus")
def test_refuses_to_write_inside_a_corpus(tmp_path):
    with pytest.raises(SdcaffError, match="inside the corpus directory"):
        ensure_outside(tmp_path / "corpus" / "m.csv", tmp_path / "corpus", "manifest")
    ensure_outside(tmp_path / "out" / "m.csv", tmp_path / "corpus", "manifest")
