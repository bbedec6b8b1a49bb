import gzip

import pytest

from monitor.readfiles import LogReadError, read_chunks


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


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(LogReadError, match="no such file"):
        list(read_chunks(tmp_path / "absent.log", 1024))
    with pytest.raises(LogReadError, match="is a directory"):
        list(read_chunks(tmp_path, 1024))
