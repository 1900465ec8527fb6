"""Every hash convention, against its definition written out with hashlib, and its properties."""
import hashlib
import json

import numpy as np

from pipeline import hashing


def test_seeded_keys_and_uniforms_follow_their_definition():
    ids = [f"doc{i}" for i in range(500)] + ["ü€", ""]
    for seed in (0, 7, "3:1:example.org"):
        keys = hashing.seeded_keys(ids, seed)
        expected = [int.from_bytes(hashlib.blake2b(f"{seed}:{d}".encode(), digest_size=8).digest(), "little")
                    for d in ids]
        assert keys.dtype == np.uint64 and keys.tolist() == expected
        assert hashing.seeded_uniforms(ids, seed).tolist() == [(k >> 11) / 2.0**53 for k in expected]
    assert hashing.seeded_keys([], 0).tolist() == [] and hashing.seeded_uniforms([], 0).tolist() == []


def test_seeded_uniforms_are_seeded_per_document():
    ids = [f"doc{i}" for i in range(20000)]
    a = hashing.seeded_uniforms(ids, 7)
    assert a.tolist() == hashing.seeded_uniforms(ids, 7).tolist()
    assert a[::-1].tolist() == hashing.seeded_uniforms(ids[::-1], 7).tolist()  # order does not matter
    assert not np.array_equal(a, hashing.seeded_uniforms(ids, 8))
    assert abs(a.mean() - 0.5) < 0.01 and a.min() >= 0 and a.max() < 1
    assert np.histogram(a, bins=10, range=(0, 1))[0].min() > 1800


def test_reference_split_key_keeps_its_convention():
    for doc_id, seed in [("abc", 0), ("ü", 3)]:
        digest = hashlib.blake2b(f"{seed}\x00{doc_id}".encode(), digest_size=8).digest()
        assert hashing.reference_split_key(doc_id, seed) == int.from_bytes(digest, "big") / 2.0**64
    u = [hashing.reference_split_key(f"d{i}", 1) for i in range(5000)]
    assert 0 <= min(u) and max(u) < 1 and abs(np.mean(u) - 0.5) < 0.02


def test_short_digest_is_canonical():
    obj = {"b": [1, 2.5, None], "a": {"y": "ü", "x": True}}
    expected = hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:16]
    assert hashing.short_digest(obj) == expected
    assert hashing.short_digest({"a": obj["a"], "b": obj["b"]}) == expected      # key order does not matter
    assert hashing.short_digest({**obj, "b": [2.5, 1, None]}) != expected        # list order does


def test_doc_id_file_and_path_digests(tmp_path):
    assert hashing.doc_id("hello") == hashlib.blake2b(b"hello", digest_size=16).hexdigest()
    path = tmp_path / "f.bin"
    path.write_bytes(b"x" * (5 << 20))                                              # more than one read chunk
    assert hashing.file_sha256(path) == hashlib.sha256(b"x" * (5 << 20)).hexdigest()
    assert hashing.path_key("/a/b") == hashlib.sha1(b"/a/b").hexdigest()[:16] != hashing.path_key("/a/c")
