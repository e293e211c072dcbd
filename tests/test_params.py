import dataclasses
from typing import Literal

import pytest

from sdcaff import params
from sdcaff.errors import ParamsError


@dataclasses.dataclass(frozen=True)
class Inner:
    lr: float = 5.0e-4
    drops: list[int] = dataclasses.field(default_factory=lambda: [10, 20])


@dataclasses.dataclass(frozen=True)
class Section:
    name: str
    mode: Literal["a", "b"] = "a"
    inner: Inner = Inner()
    root: str | None = None


def write(tmp_path, text):
    path = tmp_path / "params.yaml"
    path.write_text(text)
    return path


def test_loads_nested_section_with_defaults(tmp_path):
    path = write(tmp_path, "sec:\n  name: x\n  inner:\n    lr: 1\n")
    got = params.load("sec", Section, path)
    assert got == Section(name="x", inner=Inner(lr=1.0))
    assert isinstance(got.inner.lr, float)


def test_unknown_key_names_file_and_line(tmp_path):
    path = write(tmp_path, "sec:\n  name: x\n  inner:\n    lr: 1.0\n    lr_drop: [3]\n")
    with pytest.raises(ParamsError, match=r"params.yaml:5: unknown key 'sec.inner.lr_drop'"):
        params.load("sec", Section, path)


def test_string_where_number_expected(tmp_path):
    path = write(tmp_path, "sec:\n  name: x\n  inner:\n    lr: 5e-4\n")
    with pytest.raises(ParamsError, match=r":4: 'sec.inner.lr' must be a number"):
        params.load("sec", Section, path)


def test_literal_and_missing_required(tmp_path):
    with pytest.raises(ParamsError, match="must be one of"):
        params.load("sec", Section, write(tmp_path, "sec:\n  name: x\n  mode: c\n"))
    with pytest.raises(ParamsError, match="lacks the required key 'name'"):
        params.load("sec", Section, write(tmp_path, "sec:\n  mode: a\n"))


def test_missing_section_and_file(tmp_path):
    with pytest.raises(ParamsError, match="missing section 'sec'"):
        params.load("sec", Section, write(tmp_path, "other: {}\n"))
    with pytest.raises(ParamsError, match="cannot read"):
        params.load("sec", Section, tmp_path / "nope.yaml")
