"""Corpus layer: parsers, synthetic corpora, manifests, fingerprints and protocol splits."""
