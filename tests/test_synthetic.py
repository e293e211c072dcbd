"""sdcaff/data/synthetic.py: layouts the real parsers read, label formats, determinism, sizes, and audio worth learning from."""

from __future__ import annotations

import collections
import hashlib
import os
import re
from pathlib import Path

import numpy as np
import pytest

from sdcaff import cli, params
from sdcaff.data import audio, iemocap, msp_improv, synthetic
from sdcaff.errors import SdcaffError

SEED = 11
REPO = Path(__file__).resolve().parents[1]

# corpora.md, verbatim
SUMMARY = re.compile(r"^\[(\d+\.\d+) - (\d+\.\d+)\]\t(\S+)\t(\w{3})\t\[(\d+\.\d+), (\d+\.\d+), (\d+\.\d+)\]$")
UTTERANCE = re.compile(r"^Ses(0[1-5])([FM])_(impro0[1-8][ab]?|script0[1-3]_[1-3]b?)_([FM])(\d{3})$")
# The per-evaluator shapes we write, modelled on the release
CATEGORICAL_LINE = re.compile(r"^C-E[1-6]:\t[A-Z][a-z]+;( [A-Z][a-z]+;)?\t\([a-z ]*\)$")
ATTRIBUTE_LINE = re.compile(r"^A-E[1-6]:\tval ([1-5]); act ([1-5]); dom  ([1-5]);\t\([a-z ]*\)$")
MSP_PATH = re.compile(
    r"^Audio/session([1-6])/S(\d\d)([AHNS])/([PRST])/MSP-IMPROV-S\2\3-([FM])(\d\d)-\4-(FM|MF)(\d\d)\.wav$"
)
MSP_RATER_LINE = re.compile(
    r"^(Angry|Happy|Neutral|Sad|Other); [A-Za-z,]*; A:[1-5]\.0{6}; V:[1-5]\.0{6}; D:[1-5]\.0{6}; N:[1-5]\.0{6};$"
)


def header(path: Path) -> tuple[int, int, int, str]:
    """Returns (sample rate, channels, bits, encoding) of one wav."""
    info = audio.inspect(path)
    return info.sample_rate, info.channels, info.bits, info.encoding


def tree(root: Path) -> dict[str, tuple[str, int]]:
    """Returns relative path -> (sha256 of content or 'dir', mtime) for everything under root."""
    out = {".": ("dir", os.stat(root).st_mtime_ns)}
    for path in sorted(root.rglob("*")):
        digest = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "dir"
        out[path.relative_to(root).as_posix()] = (digest, path.stat().st_mtime_ns)
    return out


@pytest.fixture(scope="module")
def iemocap_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth") / "iemocap"
    synthetic.synthesize("iemocap", root, SEED, scale=0.025, improvised_share=0.55)
    return root


@pytest.fixture(scope="module")
def msp_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth") / "msp-improv"
    synthetic.synthesize("msp-improv", root, SEED, scale=0.012)
    return root


def default_params() -> synthetic.SynthParams:
    return params.load("synth", synthetic.SynthParams, REPO / "params.yaml")


# --- IEMOCAP layout ---------------------------------------------------------------------------


def test_iemocap_has_the_151_release_dialogs_and_session_folders(iemocap_root):
    files = sorted(iemocap_root.glob("Session*/dialog/EmoEvaluation/*.txt"))
    dialogs = [f.stem for f in files if not f.name.startswith("._")]
    assert len(dialogs) == 151 == len(set(dialogs))
    assert {"Ses03M_impro05a", "Ses03M_impro05b", "Ses03M_impro08b", "Ses05M_script01_1b"} <= set(dialogs)
    assert not any(d.startswith("Ses01") and "impro08" in d for d in dialogs)
    per_session = collections.Counter(f.parts[-4] for f in files if not f.name.startswith("._"))
    assert per_session == {"Session1": 28, "Session2": 30, "Session3": 32, "Session4": 30, "Session5": 31}


def test_iemocap_summary_lines_and_ids_match_the_spec_regexes_one_per_wav(iemocap_root):
    labelled = {}
    for path in sorted(iemocap_root.glob("Session*/dialog/EmoEvaluation/Ses*.txt")):
        for line in path.read_text().splitlines():
            if line.startswith("["):
                match = SUMMARY.match(line)
                assert match, f"{path}: {line!r}"
                utt = match.group(3)
                ident = UTTERANCE.match(utt)
                assert ident and ident.group(1) == path.parts[-4][-1].zfill(2) and utt.startswith(path.stem + "_")
                labelled[utt] = f"{path.parts[-4]}/sentences/wav/{path.stem}/{utt}.wav"
    wavs = {p.relative_to(iemocap_root).as_posix() for p in iemocap_root.glob("Session*/sentences/wav/*/*.wav")
            if not p.name.startswith("._")}
    assert sorted(labelled.values()) == sorted(wavs)
    assert len(wavs) == round(10039 * 0.025)


def test_iemocap_label_files_have_header_blocks_and_evaluator_lines(iemocap_root):
    checked = 0
    for path in sorted(iemocap_root.glob("Session*/dialog/EmoEvaluation/Ses*.txt")):
        text = path.read_text()
        assert text.startswith(synthetic.IEMOCAP_HEADER + "\n\n")
        previous_end = 0.0
        for block in text[len(synthetic.IEMOCAP_HEADER) + 2:].split("\n\n")[:-1]:
            summary, *raters = block.split("\n")
            start, end, utt, label, *vad = SUMMARY.match(summary).groups()
            categorical = [r for r in raters if r.startswith("C-")]
            attribute = [r for r in raters if r.startswith("A-")]
            assert raters == categorical + attribute and len(categorical) >= 3 and len(attribute) >= 2
            assert all(CATEGORICAL_LINE.match(r) for r in categorical), categorical
            scores = np.array([ATTRIBUTE_LINE.match(r).groups() for r in attribute], dtype=float)
            assert np.allclose([float(v) for v in vad], scores.mean(axis=0), atol=5e-5)
            firsts = collections.Counter(r.split("\t")[1].split(";")[0] for r in categorical)
            top = firsts.most_common(1)[0][1]
            assert top == 1 if label == "xxx" else top > len(categorical) / 2
            wav = audio.inspect(iemocap_root / path.parts[-4] / "sentences/wav" / path.stem / f"{utt}.wav")
            assert float(start) > previous_end and float(end) - float(start) == pytest.approx(wav.num_samples / 16000, abs=1e-4)
            previous_end = float(end)
            checked += 1
    assert checked == round(10039 * 0.025)


def test_iemocap_carries_the_gender_letter_trap(iemocap_root):
    ids = [p.stem for p in iemocap_root.glob("Session*/sentences/wav/*/Ses*.wav")]
    groups = [UTTERANCE.match(u).groups() for u in ids]
    assert any(lead != own for _, lead, _, own, _ in groups)
    assert {(s, own) for s, _, _, own, _ in groups} == {(f"0{s}", g) for s in range(1, 6) for g in "FM"}


def test_iemocap_per_evaluator_folders_and_strays_exist(iemocap_root):
    evaluation = iemocap_root / "Session2" / "dialog" / "EmoEvaluation"
    cat = sorted((evaluation / "Categorical").glob("*_cat.txt"))
    atr = sorted((evaluation / "Attribute").glob("*_atr.txt"))
    assert cat and atr
    assert re.match(r"^Ses02[FM]_\S+ :[A-Z][a-z]+( state)?;", cat[0].read_text())
    assert re.match(r"^Ses02[FM]_\S+ :act [1-5]; val [1-5]; dom  [1-5];", atr[0].read_text())
    strays = [p for p in iemocap_root.rglob("*") if p.name.startswith("._") or p.suffix == ".pk"]
    kinds = {(p.parent.name == "EmoEvaluation", p.suffix) for p in strays}
    assert {(True, ".txt"), (False, ".wav"), (False, ".pk")} <= kinds
    assert all(p.read_bytes()[:4] == b"\x00\x05\x16\x07" for p in strays if p.name.startswith("._"))


def test_iemocap_parser_reads_the_synthetic_copy_without_special_cases(iemocap_root):
    rows, found = iemocap.parse(iemocap_root)
    assert len(rows) == round(10039 * 0.025)
    assert found["label files per session"] == {"Session1": 28, "Session2": 30, "Session3": 32, "Session4": 30,
                                                "Session5": 31}
    assert {r["sample_rate"] for r in rows} == {16000}
    trap = [r for r in rows if r["dialog"][5] != r["gender"]]
    assert trap and all(r["speaker"] == f"Ses0{r['session']}_{r['utt_id'][-4]}" for r in trap)


def test_iemocap_wavs_are_16k_mono_pcm16_with_quiet_edges(iemocap_root):
    paths = sorted(iemocap_root.glob("Session*/sentences/wav/*/Ses*.wav"))
    infos = {header(p) for p in paths}
    assert infos == {(16000, 1, 16, "pcm")}
    for path in paths[:20]:
        samples, rate = audio.read(path)
        edge = np.sqrt(np.mean(samples[: int(0.04 * rate)] ** 2))  # leads are >= 0.05 s even when shrunk
        loudest = max(np.sqrt(np.mean(w**2)) for w in np.array_split(samples, len(samples) // 1600))
        assert 20 * np.log10(loudest / edge) > 20  # leading silence: low noise, not speech


# --- MSP-IMPROV layout ------------------------------------------------------------------------


def test_msp_paths_follow_the_release_tree(msp_root):
    wavs = sorted(p.relative_to(msp_root).as_posix() for p in msp_root.glob("Audio/*/*/*/*.wav"))
    assert len(wavs) == round(8438 * 0.012)
    for rel in wavs:
        match = MSP_PATH.match(rel)
        assert match, rel
        assert int(match.group(6)) == int(match.group(1))  # F0k and M0k are recorded in session k
    assert {header(msp_root / w) for w in wavs} == {(44100, 1, 16, "pcm")}


def test_msp_evaluation_file_blocks_spacing_and_raters(msp_root):
    assert not (msp_root / "Evaluation.txt").exists()
    text = (msp_root / "Evalution.txt").read_text()
    blocks = text.split("\n\n")[:-1]
    spacings = set()
    for block in blocks:
        head, *raters = block.split("\n")
        fields = [f.strip() for f in head.split(";")]
        assert fields[0].startswith("UTD-IMPROV-") and fields[0].endswith(".avi") and fields[-1] == ""
        assert fields[1] in "AHNSOX" and [f[:2] for f in fields[2:6]] == ["A:", "V:", "D:", "N:"]
        spacings.add(tuple(re.findall(r"\s*;\s*", head)))
        assert len(raters) >= 5 and all(MSP_RATER_LINE.match(r) for r in raters), raters
        names = collections.Counter(r.split(";")[0] for r in raters).most_common(1)[0]
        assert names[1] > len(raters) / 2 if fields[1] != "X" else names[1] <= len(raters) / 2
    assert len(spacings) > 10  # the separators vary line to line
    wavs = list(msp_root.glob("Audio/*/*/*/*.wav"))
    assert 0 < len(wavs) - len(blocks) < 0.05 * len(wavs)  # a few utterances lack an evaluation block


def test_msp_parser_reads_the_synthetic_copy(msp_root):
    rows, _ = msp_improv.parse(msp_root)
    assert len(rows) == round(8438 * 0.012)
    assert any(r["label"] == "" for r in rows) and {r["label"] for r in rows} - {""} <= set("AHNSOX")
    assert {r["session"] for r in rows} == set(range(1, 7)) and {r["mode"] for r in rows} == set("PRST")
    assert all(r["speaker"][1:] == f"{r['session']:02d}" and r["sample_rate"] == 44100 for r in rows)


# --- Sizes and proportions (plans only: no audio) -----------------------------------------------


def test_scale_one_gives_the_real_iemocap_counts():
    plan = synthetic.plan_iemocap(SEED, 1.0, None)
    utts = [u for dialog in plan.values() for u in dialog]
    assert len(utts) == 10039
    assert collections.Counter(u.label for u in utts) == synthetic.IEMOCAP_LABELS
    improvised = collections.Counter(u.label for u in utts if "_impro" in u.uid)
    assert {k: improvised[k] for k in synthetic.IEMOCAP_IMPROVISED_MAIN} == synthetic.IEMOCAP_IMPROVISED_MAIN
    assert sum(improvised.values()) == synthetic.IEMOCAP_IMPROVISED_WAVS
    sessions = collections.Counter(int(u.uid[3:5]) for u in utts)
    assert tuple(sessions[s] for s in range(1, 6)) == synthetic.IEMOCAP_SESSION_WAVS


def test_scale_one_gives_about_the_real_msp_improv_counts():
    utts = synthetic.plan_msp_improv(SEED, 1.0)
    assert len(utts) == 8438 == len({u.uid for u in utts})
    conditions = collections.Counter(u.uid.split("-")[4] for u in utts)
    assert conditions == synthetic.MSP_CONDITIONS
    consensus = collections.Counter(u.label for u in utts)
    for letter, real in synthetic.MSP_CONSENSUS.items():
        assert abs(consensus[letter] - real) <= 0.01 * 8438, (letter, consensus[letter], real)
    agree = {c: np.mean([u.label == u.uid.split("-")[2][-1] for u in utts if u.label and u.uid.split("-")[4] == c])
             for c in "RTSP"}
    assert min(agree["R"], agree["T"]) > 0.6 > max(agree["S"], agree["P"]) > 0.25


def test_default_sizes_fit_the_time_budget():
    p = default_params()
    utts = [u for d in synthetic.plan_iemocap(p.seed, p.iemocap_scale, p.iemocap_improvised_share).values() for u in d]
    authors = [u for u in utts if "_impro" in u.uid and u.label in ("neu", "sad", "ang", "exc")]
    assert 1000 <= len(utts) <= 1400 and 300 <= len(authors) <= 420
    assert 600 <= len(synthetic.plan_msp_improv(p.seed, p.msp_improv_scale)) <= 900


def test_durations_are_log_normal_around_three_seconds():
    p = default_params()
    seconds = np.array([u.num_samples / u.rate for u in synthetic.plan_msp_improv(p.seed, p.msp_improv_scale)]
                       + [u.num_samples / u.rate for d in synthetic.plan_iemocap(p.seed, p.iemocap_scale, None).values()
                          for u in d])
    assert seconds.min() >= 0.8 and seconds.max() <= 12.0
    assert 2.7 < np.median(seconds) < 3.3 and np.quantile(seconds, 0.95) > 6.0 and np.quantile(seconds, 0.05) < 1.5


def test_emotions_move_loudness_as_arousal_does():
    voice = synthetic.speaker_voice(SEED, "iemocap", "Ses01_F", "F")
    level = {}
    for label in ("sad", "neu", "ang"):
        db = []
        for k in range(12):
            rng = synthetic.rng_for(SEED, label, str(k))
            speech, mask = synthetic.render_speech(voice, synthetic.utterance_style(voice, label, rng), 24000, 16000, rng)
            db.append(10 * np.log10(np.mean(speech[mask] ** 2)))
        level[label] = np.mean(db)
    assert level["sad"] < level["neu"] < level["ang"]


# --- Determinism and the stage ------------------------------------------------------------------


def test_same_seed_same_bytes_and_mtimes_in_any_worker_count(tmp_path):
    synthetic.synthesize("iemocap", tmp_path / "a", SEED, scale=0.004, workers=1)
    synthetic.synthesize("iemocap", tmp_path / "b", SEED, scale=0.004, workers=2)
    synthetic.synthesize("iemocap", tmp_path / "c", SEED + 1, scale=0.004, workers=1)
    a, b, c = tree(tmp_path / "a"), tree(tmp_path / "b"), tree(tmp_path / "c")
    assert a == b
    assert {mtime for _, mtime in a.values()} == {synthetic.EPOCH * 10**9}
    wav = next(k for k in a if k.endswith(".wav") and "._" not in k)
    assert a[wav][0] != c.get(wav, ("absent",))[0] and a != c


def test_rewriting_replaces_the_whole_folder(tmp_path):
    out = tmp_path / "msp-improv"
    synthetic.synthesize("msp-improv", out, SEED, scale=0.003)
    (out / "leftover.txt").write_text("old")
    synthetic.synthesize("msp-improv", out, SEED + 1, scale=0.003)
    assert not (out / "leftover.txt").exists() and (out / "Evalution.txt").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folder left


def write_params(folder: Path) -> None:
    (folder / "params.yaml").write_text(
        "synth:\n  seed: 5\n  iemocap_scale: 0.004\n  iemocap_improvised_share: null\n"
        "  msp_improv_scale: 0.003\n  workers: 1\n"
        "corpora:\n  iemocap:\n    root: null\n  msp-improv:\n    root: null\n"
    )


def test_cli_writes_the_default_folder_from_params(in_tmp, monkeypatch):
    monkeypatch.delenv("SDCAFF_MSP_IMPROV", raising=False)
    write_params(in_tmp)
    assert cli.main(["synth", "--corpus", "msp-improv"]) == 0
    out = in_tmp / "artifacts" / "corpora" / "msp-improv"
    assert len(list(out.glob("Audio/*/*/*/*.wav"))) == round(8438 * 0.003)
    assert cli.main(["synth", "--corpus", "msp-improv", "--out", "other", "--seed", "5", "--scale", "0.003"]) == 0
    assert tree(in_tmp / "other") == tree(out)


def test_cli_writes_only_a_note_when_the_real_corpus_is_configured(in_tmp, monkeypatch):
    write_params(in_tmp)
    monkeypatch.setenv("SDCAFF_IEMOCAP", "/data/IEMOCAP_full_release")
    assert cli.main(["synth", "--corpus", "iemocap"]) == 0
    out = in_tmp / "artifacts" / "corpora" / "iemocap"
    assert sorted(p.name for p in out.iterdir()) == [synthetic.MARKER, "NOTE.txt"]
    assert "/data/IEMOCAP_full_release" in (out / "NOTE.txt").read_text()
    assert (out / "NOTE.txt").stat().st_mtime == synthetic.EPOCH


def test_bad_sizes_are_errors(in_tmp, monkeypatch, capsys):
    monkeypatch.delenv("SDCAFF_IEMOCAP", raising=False)
    with pytest.raises(SdcaffError, match="scale must be positive"):
        synthetic.synthesize("iemocap", in_tmp / "x", SEED, scale=0.0)
    with pytest.raises(SdcaffError, match=r"improvised_share must lie in \(0, 1\)"):
        synthetic.synthesize("iemocap", in_tmp / "x", SEED, scale=0.01, improvised_share=1.5)
    write_params(in_tmp)
    assert cli.main(["synth", "--corpus", "iemocap", "--scale", "-1"]) == 1
    assert "scale must be positive" in capsys.readouterr().err
    assert not (in_tmp / "x").exists() and not (in_tmp / "artifacts").exists()


# --- The study is meaningful: learnable, not trivial, lower across speakers and corpora ----------


def mfcc_stats(paths: list[str]) -> np.ndarray:
    """Returns per-utterance MFCC mean and std (40 + 40) at 16 kHz, (n, 80)."""
    import torch
    import torchaudio
    from scipy.signal import resample_poly

    mfcc = torchaudio.transforms.MFCC(16000, n_mfcc=40, melkwargs=dict(n_fft=768, hop_length=384, n_mels=64))
    out = []
    for path in paths:
        samples, rate = audio.read(path)
        if rate != 16000:
            samples = resample_poly(samples, 160, 441).astype(np.float32)
        m = mfcc(torch.from_numpy(samples)).numpy()
        out.append(np.concatenate([m.mean(axis=1), m.std(axis=1)]))
    return np.stack(out)


@pytest.mark.slow
def test_a_simple_classifier_learns_but_not_perfectly(tmp_path):
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score, balanced_accuracy_score
    from sklearn.model_selection import GroupKFold, StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    p = default_params()
    synthetic.synthesize("iemocap", tmp_path / "iemocap", p.seed, p.iemocap_scale, p.iemocap_improvised_share, 2)
    synthetic.synthesize("msp-improv", tmp_path / "msp", p.seed, p.msp_improv_scale, workers=2)
    rows_i = iemocap.parse(tmp_path / "iemocap")[0]
    rows_m = [r for r in msp_improv.parse(tmp_path / "msp")[0] if r["label"] in ("A", "H", "N", "S")]
    x_i, x_m = mfcc_stats([r["path"] for r in rows_i]), mfcc_stats([r["path"] for r in rows_m])

    def model():
        return make_pipeline(StandardScaler(), LogisticRegression(max_iter=3000))

    # The authors' subset: improvised neu, sad, ang, exc.
    authors = np.array([r["mode"] == "improvised" and r["label"] in ("neu", "sad", "ang", "exc") for r in rows_i])
    y = np.array([r["label"] for r in rows_i])[authors]
    sessions = np.array([r["session"] for r in rows_i])[authors]
    random_folds = cross_val_predict(model(), x_i[authors], y, cv=StratifiedKFold(5, shuffle=True, random_state=0))
    loso = cross_val_predict(model(), x_i[authors], y, cv=GroupKFold(5), groups=sessions)
    wa_random, wa_loso = accuracy_score(y, random_folds), accuracy_score(y, loso)
    assert 0.45 <= wa_random <= 0.75
    assert wa_loso < wa_random

    # Cross-corpus: all of IEMOCAP with hap+exc as happy -> MSP-IMPROV consensus labels.
    to_letter = {"neu": "N", "sad": "S", "ang": "A", "hap": "H", "exc": "H"}
    four = np.array([r["label"] in to_letter for r in rows_i])
    y_i = np.array([to_letter.get(r["label"], "") for r in rows_i])[four]
    loso_all = cross_val_predict(model(), x_i[four], y_i, cv=GroupKFold(5),
                                 groups=np.array([r["session"] for r in rows_i])[four])
    y_m = np.array([r["label"] for r in rows_m])
    cross = model().fit(x_i[four], y_i).predict(x_m)
    assert balanced_accuracy_score(y_m, cross) < balanced_accuracy_score(y_i, loso_all) - 0.10
    msp_random = cross_val_predict(model(), x_m, y_m, cv=StratifiedKFold(5, shuffle=True, random_state=0))
    assert 0.40 <= accuracy_score(y_m, msp_random) <= 0.80
