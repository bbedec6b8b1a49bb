import os

from monitor.follow.identity import holds_what_was_read, identity_of, matches, read_head, siblings


def test_fingerprint_tells_files_apart_and_recognises_a_copy(tmp_path):
    original = tmp_path / "app.log"
    original.write_bytes(b"".join(b"2025-10-22 14:20:%02d,123 | line %d\n" % (n % 60, n) for n in range(100)))
    with open(original, "rb") as f:
        identity = identity_of(f, os.fstat(f.fileno()))
    assert matches(read_head(str(original)), identity)
    offset = 1500
    tail = original.read_bytes()[offset - 64 : offset]
    copy = tmp_path / "app.log.1"
    copy.write_bytes(original.read_bytes())
    assert holds_what_was_read(str(copy), identity, offset, tail)
    assert not holds_what_was_read(str(original), identity, offset, tail)  # itself is no copy
    other = tmp_path / "app.log.2"
    other.write_bytes(original.read_bytes()[: offset - 1])  # shorter than what was read
    assert not holds_what_was_read(str(other), identity, offset, tail)
    rewritten = tmp_path / "app.log.3"
    rewritten.write_bytes(original.read_bytes()[:1024] + b"X" * 2000)  # same head, other bytes later
    assert not holds_what_was_read(str(rewritten), identity, offset, tail)
    (tmp_path / "app.log.4.gz").write_bytes(b"\x1f\x8b")
    assert siblings(str(original)) == [str(copy), str(other), str(rewritten)]
