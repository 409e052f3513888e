"""--record DIR files (aegis.feed.recording): gzip JSON lines {"t","stream","data"} that read back exactly."""
from __future__ import annotations

import gzip

import orjson

from aegis.feed.recording import Recorder, read_recording, recorded_files


def test_combined_payloads_are_recorded_with_their_receive_time_and_read_back(tmp_path):
    rec = Recorder(tmp_path)
    a = b'{"stream":"btcusdt@bookTicker","data":{"e":"bookTicker","u":1,"s":"BTCUSDT","b":"1","B":"1","a":"2","A":"1"}}'
    b = b'{"stream":"btcusdt@aggTrade","data":{"e":"aggTrade","s":"BTCUSDT","p":"1","q":"2","a":7}}'
    rec.write_payloads(123, [a, b])
    rec.write_payloads(456, [memoryview(b'{"e":"markPriceUpdate","s":"BTCUSDT","p":"3"}')])
    rec.close()
    got = list(read_recording(tmp_path))
    assert got == [(123, "btcusdt@bookTicker", orjson.loads(a)["data"]),
                   (123, "btcusdt@aggTrade", orjson.loads(b)["data"]),
                   (456, "", {"e": "markPriceUpdate", "s": "BTCUSDT", "p": "3"})]
    line = gzip.open(recorded_files(tmp_path)[0]).readline()
    assert set(orjson.loads(line)) == {"t", "stream", "data"}


def test_files_rotate_by_size_and_read_back_in_order(tmp_path):
    rec = Recorder(tmp_path, max_bytes=200)
    for t in range(20):
        rec.write(t, "s@bookTicker", {"k": t, "pad": "x" * 50})
    rec.close()
    assert len(recorded_files(tmp_path)) > 1
    assert [t for t, _, _ in read_recording(tmp_path)] == list(range(20))


def test_a_truncated_file_yields_its_complete_lines_and_no_error(tmp_path):
    rec = Recorder(tmp_path)
    for t in range(1000):
        rec.write(t, "s", {"k": t})
    rec.close()
    f = recorded_files(tmp_path)[0]
    data = f.read_bytes()
    f.write_bytes(data[: len(data) // 2])
    got = [t for t, _, _ in read_recording(tmp_path)]
    assert got == list(range(len(got)))


def test_control_replies_and_junk_are_not_recorded(tmp_path):
    rec = Recorder(tmp_path)
    rec.write_payloads(1, [b'{"result":null,"id":1}', b"garbage", b'{"error":{"code":2},"id":3}'])
    rec.close()
    assert list(read_recording(tmp_path)) == []
