import dataclasses
from pathlib import Path
from typing import Literal

import pytest
import yaml

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


# --- the profile in use: profile.yaml beside the params file ---------------------------------------

PROFILES = "profiles:\n  quick: {model: {}}\n  paper: {model: {}}\n"


def test_profile_file_beside_the_params_wins(tmp_path):
    path = write(tmp_path, PROFILES)
    (tmp_path / "profile.yaml").write_text("# the switch\nprofile: paper\n")
    assert params.profile_name(path) == "paper"


def test_profile_in_params_is_the_fallback_without_a_profile_file(tmp_path):
    # Tests and tools that write one params.yaml with a `profile:` key into a folder of their own.
    assert params.profile_name(write(tmp_path, "profile: quick\n" + PROFILES)) == "quick"
    with pytest.raises(ParamsError, match=r"params.yaml: 'profile' must name one of the profiles, got None"):
        params.profile_name(write(tmp_path, PROFILES))


def test_profile_in_both_files_is_an_error_naming_both(tmp_path):
    path = write(tmp_path, PROFILES + "profile: quick\n")
    (tmp_path / "profile.yaml").write_text("# the switch\nprofile: paper\n")
    with pytest.raises(ParamsError, match=r"params.yaml:4: 'profile' is set here and in .*profile.yaml:2"):
        params.profile_name(path)


def test_profile_file_errors_name_its_line(tmp_path):
    path = write(tmp_path, PROFILES)
    profile = tmp_path / "profile.yaml"
    profile.write_text("profile: big\n")
    with pytest.raises(ParamsError, match=r"profile.yaml:1: unknown profile 'big'; known: paper, quick"):
        params.profile_name(path)
    profile.write_text("profile: quick\nseed: 1\n")
    with pytest.raises(ParamsError, match=r"profile.yaml:2: unknown key 'seed'; profile.yaml holds only 'profile'"):
        params.profile_name(path)


def test_repository_profile_lives_in_profile_yaml_only():
    repo = Path(__file__).resolve().parents[1]
    data, _ = params.read(repo / "params.yaml")
    assert "profile" not in data  # one source of truth: DVC interpolates ${profile} from profile.yaml
    assert params.profile_name(repo / "params.yaml") in data["profiles"]
    dvc = yaml.safe_load((repo / "dvc.yaml").read_text())
    assert "profile.yaml" in dvc["vars"]
    # Stage resolve reads the profile; train and evaluate depend on its per-experiment files instead.
    declared = dvc["stages"]["resolve"]["params"]
    assert {"profile.yaml": ["profile"]} in declared and "profile" not in declared
    for stage in ("train", "evaluate"):
        stage_params = dvc["stages"][stage]["do"].get("params", [])
        assert not any("profile" in str(p) for p in stage_params), stage
