from monitor.scan.lines import LineFramer


def lines_of(framer: LineFramer, *chunks: bytes, flush: bool = True) -> list[bytes]:
    out = []
    for chunk in chunks:
        for block in framer.feed(chunk):
            out.extend(block.tobytes().splitlines(keepends=True))
    if flush:
        for block in framer.flush():
            out.extend(block.tobytes().splitlines(keepends=True))
    return out


def test_whole_lines_pass_through_and_are_counted():
    framer = LineFramer(1024)
    assert lines_of(framer, b"a\nb\nc\n") == [b"a\n", b"b\n", b"c\n"]
    assert (framer.stats.lines, framer.stats.bytes, framer.stats.oversized_lines) == (3, 6, 0)


def test_a_line_split_across_reads_is_joined():
    framer = LineFramer(1024)
    assert lines_of(framer, b"first\nsec", b"ond par", b"t\nthird\n") == [b"first\n", b"second part\n", b"third\n"]
    assert framer.stats.lines == 3


def test_partial_last_line_waits_for_its_newline_and_flush_emits_it():
    framer = LineFramer(1024)
    assert lines_of(framer, b"done\nhalf", flush=False) == [b"done\n"]
    assert framer.pending_bytes == 4
    assert [b.tobytes() for b in framer.flush()] == [b"half\n"]
    assert framer.stats.lines == 2
    assert framer.flush() == []


def test_crlf_is_normalised_to_lf():
    framer = LineFramer(1024)
    assert lines_of(framer, b"a\r\nb\r", b"\nc\r\n") == [b"a\n", b"b\n", b"c\n"]
    assert framer.stats.bytes == 9


def test_oversized_line_keeps_only_its_head_and_the_next_line_is_intact():
    framer = LineFramer(256)
    long = b"K" + b"x" * 5000
    out = lines_of(framer, long[:1000], long[1000:3000], long[3000:] + b"\nnext\n")
    assert out == [long[:256] + b"\n", b"next\n"]
    assert (framer.stats.lines, framer.stats.oversized_lines) == (2, 1)


def test_oversized_line_inside_one_big_read():
    framer = LineFramer(256)
    data = b"short\n" + b"y" * 1000 + b"\nafter\n"
    assert lines_of(framer, data) == [b"short\n", b"y" * 256 + b"\n", b"after\n"]
    assert framer.stats.oversized_lines == 1


def test_oversized_line_completed_by_carry_and_next_read():
    framer = LineFramer(256)
    out = lines_of(framer, b"z" * 200, b"z" * 200 + b"\nok\n")
    assert out == [b"z" * 256 + b"\n", b"ok\n"]
    assert framer.stats.oversized_lines == 1


def test_memory_stays_bounded_by_the_cap_on_an_endless_line():
    framer = LineFramer(4096)
    for _ in range(1000):  # 64 MiB without a newline
        framer.feed(b"a" * 65536)
        assert framer.pending_bytes <= 4096
    assert framer.stats.oversized_lines == 1
    assert lines_of(framer, b"tail\nnew\n") == [b"new\n"]


def test_line_of_exactly_the_cap_is_not_oversized():
    framer = LineFramer(256)
    assert lines_of(framer, b"q" * 256 + b"\n") == [b"q" * 256 + b"\n"]
    assert framer.stats.oversized_lines == 0
