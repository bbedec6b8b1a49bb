import gzip

import pytest

from monitor.scan.readfiles import LogReadError, expand_paths, read_chunks


def test_plain_and_gzip_by_magic_not_name(tmp_path):
    data = "分析 行\n".encode() * 1000
    plain = tmp_path / "a.log"
    plain.write_bytes(data)
    packed = tmp_path / "b.log"  # gzip without the .gz name
    packed.write_bytes(gzip.compress(data))
    assert b"".join(read_chunks(plain, 4096)) == data
    assert b"".join(read_chunks(packed, 4096)) == data


def test_cut_gzip_keeps_what_was_read_and_says_where(tmp_path):
    data = bytes(range(256)) * 4000
    path = tmp_path / "cut.log.gz"
    path.write_bytes(gzip.compress(data)[:-200])
    got = []
    with pytest.raises(LogReadError, match=r"cut.log.gz: compressed data is corrupt or cut short after \d+ bytes"):
        for chunk in read_chunks(path, 65536):
            got.append(chunk)
    assert data.startswith(b"".join(got))


def test_corrupt_deflate_data_is_named_with_what_was_read_before(tmp_path):
    data = b"".join(b"line %d\n" % n for n in range(200_000))
    packed = bytearray(gzip.compress(data))
    middle = len(packed) // 2
    packed[middle : middle + 64] = b"\xff" * 64  # no valid deflate block: the inflater stops there
    path = tmp_path / "bad.log.gz"
    path.write_bytes(bytes(packed))
    got = []
    with pytest.raises(LogReadError) as caught:
        for chunk in read_chunks(path, 65536):
            got.append(chunk)
    assert len(b"".join(got)) == 28 * 65536  # whole chunks only, as before
    assert str(caught.value) == (
        f"{path}: compressed data is corrupt or cut short after {28 * 65536} bytes "
        "(Error -1 Invalid deflate block found); the lines before that were counted"
    )


def test_gzip_members_one_after_another_are_read_whole(tmp_path):
    """`cat a.gz b.gz > c.gz` is one valid gzip file: every member is read."""
    first, second = b"a\n" * 50_000, "分析 行\n".encode() * 30_000
    path = tmp_path / "joined.log.gz"
    path.write_bytes(gzip.compress(first) + gzip.compress(second))
    assert b"".join(read_chunks(path, 4096)) == first + second


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(LogReadError, match="no such file"):
        list(read_chunks(tmp_path / "absent.log", 1024))
    with pytest.raises(LogReadError, match="is a directory"):
        list(read_chunks(tmp_path, 1024))


def test_patterns_are_expanded_sorted_in_argument_order_each_file_once(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for name in ("app.log", "app.log.1", "app.log.10", "app.log.2.gz", ".app.log.swp", "other.txt"):
        (tmp_path / name).write_bytes(b"")
    paths, errors = expand_paths(["other.txt", "app.log*", "./app.log", "app.log.?", "missing.log"])
    assert [str(p) for p in paths] == ["other.txt", "app.log", "app.log.1", "app.log.10", "app.log.2.gz", "missing.log"]
    assert errors == []  # a plain missing name is reported when it is read, as before
    paths, errors = expand_paths([str(tmp_path / "app.log.[0-9]"), "*.gz", "nothing*", "x[ab].log"])
    assert [p.name for p in paths] == ["app.log.1", "app.log.2.gz"]
    assert errors == ["nothing*: no file matches this pattern", "x[ab].log: no file matches this pattern"]


def test_a_file_named_like_a_pattern_is_taken_as_it_is(tmp_path):
    literal = tmp_path / "app[1].log"
    literal.write_bytes(b"")
    (tmp_path / "app1.log").write_bytes(b"")
    assert expand_paths([str(literal)]) == ([literal], [])
    assert expand_paths([str(tmp_path / "app[2].log")]) == (
        [],
        [f"{tmp_path / 'app[2].log'}: no file matches this pattern"],
    )


def test_control_characters_in_names_are_escaped_in_messages(tmp_path):
    name = tmp_path / "a\x1b]0;x\x07\nb.log"
    with pytest.raises(LogReadError) as info:
        list(read_chunks(name, 1024))
    assert str(info.value) == f"{tmp_path}/a\\x1b]0;x\\x07\\x0ab.log: no such file"
    assert expand_paths([str(tmp_path / "\x1b*")])[1] == [f"{tmp_path}/\\x1b*: no file matches this pattern"]
