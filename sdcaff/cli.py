"""`sdcaff <verb>`: one verb per DVC stage; each verb's module owns its arguments and its run()."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

# verb -> (module, one-line help). A module exposes add_arguments(parser) and run(args).
VERBS: dict[str, tuple[str, str]] = {
    "synth": ("sdcaff.data.synthetic", "write a synthetic corpus in the real corpus's on-disk layout"),
    "fingerprint": ("sdcaff.data.fingerprint", "record a corpus's file list, sizes and mtimes (DVC dependency)"),
    "manifest": ("sdcaff.data.manifest", "parse a corpus into a manifest CSV, one row per utterance"),
    "splits": ("sdcaff.data.splits", "turn manifests into protocol split files (utt_id, fold, role)"),
    "features": ("sdcaff.features", "silence removal, pad/cut, MFCC + deltas -> one tensor file per set"),
    "model-info": ("sdcaff.model.info", "print a model profile's parameter count and branch shapes (JSON)"),
    "resolve": ("sdcaff.resolve", "resolve every experiment's settings into artifacts/experiments/<exp>.json"),
    "train": ("sdcaff.train", "train one experiment over its seeds and folds"),
    "evaluate": ("sdcaff.evaluate", "aggregate one experiment's runs into results/metrics/<exp>.json"),
    "report": ("sdcaff.report", "tables, plots and REPORT.md from the metrics files"),
    "bench": ("sdcaff.bench", "run the timing suites and write results/bench/<device>.json"),
    "packing": ("sdcaff.packing", "units per hour with k units sharing one device (make gpu-check)"),
    "check": ("sdcaff.check", "compare metrics with committed expectations; non-zero on regression"),
}


def _top_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sdcaff", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="verb", metavar="VERB")
    for verb, (_, help_text) in VERBS.items():
        sub.add_parser(verb, help=help_text, add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # Threads are pinned before torch is imported by any verb's module.
    os.environ.setdefault("OMP_NUM_THREADS", "2")
    os.environ.setdefault("MKL_NUM_THREADS", "2")
    top = _top_parser()
    known, _ = top.parse_known_args(argv)
    if known.verb is None:
        top.print_help()
        return 2
    logging.basicConfig(
        level=logging.DEBUG if known.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
    )
    module = importlib.import_module(VERBS[known.verb][0])
    parser = argparse.ArgumentParser(prog=f"sdcaff {known.verb}", description=VERBS[known.verb][1])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    module.add_arguments(parser)
    verb_index = argv.index(known.verb)
    args = parser.parse_args(argv[:verb_index] + argv[verb_index + 1 :])

    from sdcaff.errors import SdcaffError

    try:
        return int(module.run(args) or 0)
    except SdcaffError as exc:
        print(f"sdcaff {known.verb}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"sdcaff {known.verb}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
