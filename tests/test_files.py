import errno
import os
import re

import pytest

from sdcaff.errors import SdcaffError
from sdcaff.files import atomic_dir, atomic_path, atomic_paths, ensure_outside, remove_stale_temporaries


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


@pytest.mark.reliability("half-written")
def test_atomic_paths_renames_all_or_none(tmp_path):
    targets = [tmp_path / "a" / "x.csv", tmp_path / "b" / "y.json"]
    with atomic_paths(*targets) as temps:
        for tmp, text in zip(temps, ("1", "2")):
            tmp.write_text(text)
    with pytest.raises(RuntimeError):
        with atomic_paths(*targets) as temps:
            temps[0].write_text("new")  # complete, yet it must wait for the other
            raise RuntimeError("boom")
    assert [t.read_text() for t in targets] == ["1", "2"]
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["a", "b", "x.csv", "y.json"]


@pytest.mark.reliability("half-written")
def test_atomic_paths_replaces_nothing_when_a_folder_cannot_be_made(tmp_path):
    old = tmp_path / "x.csv"
    old.write_text("old")
    (tmp_path / "results").write_text("a file in the way")
    with pytest.raises(SdcaffError, match="results: cannot write y.json there"):
        with atomic_paths(old, tmp_path / "results" / "y.json") as temps:
            temps[0].write_text("new")
    assert old.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["results", "x.csv"]


@pytest.mark.reliability("disk full")
@pytest.mark.parametrize("code,message", [(errno.ENOSPC, "no space left on device"),
                                          (errno.EDQUOT, "no space left on device (disk quota exceeded)")])
def test_full_disk_names_the_output(tmp_path, code, message):
    target = tmp_path / "m.csv"
    target.write_text("old")
    with pytest.raises(SdcaffError, match="^" + re.escape(f"{target}: {message}; free")):
        with atomic_path(target) as tmp:
            with open(tmp, "w") as stream:
                stream.write("half")
                raise OSError(code, os.strerror(code))
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["m.csv"]


@pytest.mark.reliability("disk full")
def test_full_disk_in_a_directory_keeps_the_old_one(tmp_path):
    target = tmp_path / "corpus"
    with atomic_dir(target) as tmp:
        (tmp / "a.wav").write_text("old")
    with pytest.raises(SdcaffError, match="^" + re.escape(f"{target}: no space left on device")):
        with atomic_dir(target) as tmp:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(tmp / "b.wav"))
    assert [p.name for p in tmp_path.iterdir()] == ["corpus"] and (target / "a.wav").read_text() == "old"


@pytest.mark.reliability("half-written")
def test_remove_stale_temporaries_matches_only_atomic_paths_names(tmp_path):
    target = tmp_path / "f.pt"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            stale = tmp  # the name a killed run leaves behind
            raise RuntimeError("boom")
    stale.write_bytes(bytes(10))
    others = [".f.pt.tmp", ".f.pt.abc.tmp", ".g.pt.abcdefgh.tmp", "f.pt.abcdefgh.tmp", ".f.pt.abcdefgh.tmpx"]
    for name in others:
        (tmp_path / name).write_text("keep")
    (tmp_path / ".f.pt.abcdefgh.tmp").mkdir()  # a folder of that name is not one of its files
    assert remove_stale_temporaries(target, tmp_path / "absent" / "g.json") == [stale]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(others + [".f.pt.abcdefgh.tmp"])
