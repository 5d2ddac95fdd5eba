"""Parsers for what Windows tools print (`netsh interface portproxy show all`, excluded port ranges),
on captured-style fixtures in several languages and encodings."""

from __future__ import annotations

import codecs
from pathlib import Path

import pytest

from netfwd.windows import (ExcludedRange, PortProxyEntry, decode_output, parse_excluded_ranges,
                            parse_portproxy_show, table_name)

FIXTURES = Path(__file__).parent / "fixtures" / "windows"


def fixture(name: str) -> str:
    return decode_output((FIXTURES / name).read_bytes())


def test_english_show_all_reads_every_table_and_row():
    entries = parse_portproxy_show(fixture("portproxy-show-all.en.txt"))
    assert entries == [
        PortProxyEntry("*", 16443, "192.168.10.5", 6443, "v4tov4"),
        PortProxyEntry("0.0.0.0", 8080, "10.20.30.40", 80, "v4tov4"),
        PortProxyEntry("10.0.0.4", 3389, "winserver01", 3389, "v4tov4"),
        PortProxyEntry("10.0.0.4", 8443, "fd00:10::5", 6443, "v4tov6"),  # IPv6 normalised to lower case
        PortProxyEntry("::", 9000, "192.168.10.6", 9000, "v6tov4"),
        PortProxyEntry("2001:db8::4", 443, "2001:db8:1::10", 8443, "v6tov6"),
    ]


def test_wildcard_and_any_address_are_different_entries():
    entries = parse_portproxy_show(fixture("portproxy-show-all.en.txt"))
    keys = [e.key for e in entries]
    assert ("*", 16443) in keys and ("0.0.0.0", 8080) in keys
    assert ("0.0.0.0", 16443) not in keys


@pytest.mark.parametrize("name,expected_tables", [
    ("portproxy-show-all.de.txt", ["v4tov4", "v6tov4"]),
    ("portproxy-show-all.zh-cn.gbk.txt", ["v4tov4", "v4tov4"]),
    ("portproxy-show-all.ja.utf16.txt", ["v4tov4"]),
])
def test_localised_titles_and_encodings(name, expected_tables):
    entries = parse_portproxy_show(fixture(name))
    assert [e.table for e in entries] == expected_tables
    assert entries[0] == PortProxyEntry("*", 16443, "192.168.10.5", 6443, "v4tov4")


def test_fixture_encodings_are_really_what_windows_writes():
    assert (FIXTURES / "portproxy-show-all.ja.utf16.txt").read_bytes().startswith(codecs.BOM_UTF16_LE)
    with pytest.raises(UnicodeDecodeError):
        (FIXTURES / "portproxy-show-all.zh-cn.gbk.txt").read_bytes().decode("utf-8")
    assert "侦听" in fixture("portproxy-show-all.zh-cn.gbk.txt")


def test_title_without_family_words_falls_back_to_the_addresses():
    text = ("Ouvir em:     Ligar a:\n\nEndereco  Porta  Endereco  Porta\n"
            "--------------- ----------  --------------- ----------\n"
            "10.0.0.4        8443        fd00::5         443\n"
            "*               80          10.0.0.9        80\n")
    entries = parse_portproxy_show(text)
    assert entries[0].table == "v4tov6"
    assert entries[1].table is None  # '*' alone does not say which family listens


def test_rows_stop_at_a_blank_line_and_headers_are_not_rows():
    text = ("Listen on ipv4:             Connect to ipv4:\n\nAddress Port Address Port\n"
            "--------------- ---------- --------------- ----------\n"
            "*  1  10.0.0.1  2\n\nAddress Port Address Port\n*  3  10.0.0.1  4\n")
    assert [e.listen_port for e in parse_portproxy_show(text)] == [1]


def test_empty_output_means_no_entries():
    assert parse_portproxy_show("") == []
    assert parse_portproxy_show("\r\n\r\n") == []


def test_excluded_ranges_english_with_administered_marker():
    ranges = parse_excluded_ranges(fixture("excludedportrange.en.txt"))
    assert ranges == [ExcludedRange(1080, 1179, False), ExcludedRange(5357, 5357, False),
                      ExcludedRange(50000, 50059, True)]
    assert 1100 in ranges[0] and 1180 not in ranges[0] and 5357 in ranges[1]


def test_excluded_ranges_localised():
    ranges = parse_excluded_ranges(fixture("excludedportrange.zh-cn.utf8.txt"))
    assert [(r.start, r.end) for r in ranges] == [(2869, 2869), (16400, 16499)]
    assert any(16443 in r for r in ranges)


def test_table_names():
    assert [table_name(a, b) for a in (4, 6) for b in (4, 6)] == ["v4tov4", "v4tov6", "v6tov4", "v6tov6"]


def test_decode_output_handles_boms_and_bomless_utf16():
    text = "Listen on ipv4:"
    assert decode_output(codecs.BOM_UTF8 + text.encode()) == text
    assert decode_output(text.encode("utf-16-le")) == text
    assert decode_output(codecs.BOM_UTF16_BE + text.encode("utf-16-be")) == text
    assert decode_output("Écouter sur ipv4".encode("cp1252")).endswith("ipv4")
