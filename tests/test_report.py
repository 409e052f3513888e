import re
import shutil
import struct
import subprocess
import sys
import zlib

import numpy as np
import pytest

from aegis.core import latency as L
from aegis.app import report as R


def _set_with(stage_values: dict) -> np.ndarray:
    s = L.new_set()
    for st, values in stage_values.items():
        for v in values:
            L.record_stage(s, st, int(v))
    return s


def _lognormal_set(seed=1, n=20_000):
    rng = np.random.default_rng(seed)
    s = L.new_set()
    for st in range(L.N_STAGES):
        x = rng.lognormal(np.log(500 * (st + 1)), 0.6, n).astype(np.int64) + 1
        L.record_spans(s, st, np.ones(n, np.int64), x + 1)
    return s


def _decode_png(data: bytes) -> np.ndarray:
    """Independent minimal decoder (chunks, CRCs, zlib, filter 0 rows) used to check what the writer produced."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, ihdr = 8, b"", None
    while pos < len(data):
        (n,) = struct.unpack(">I", data[pos:pos + 4])
        tag, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + n]
        (crc,) = struct.unpack(">I", data[pos + 8 + n:pos + 12 + n])
        assert crc == zlib.crc32(tag + body) & 0xFFFFFFFF
        if tag == b"IHDR":
            ihdr = struct.unpack(">IIBBBBB", body)
        elif tag == b"IDAT":
            idat += body
        pos += 12 + n
        if tag == b"IEND":
            break
    w, h, depth, ctype = ihdr[:4]
    assert (depth, ctype) == (8, 2)
    rows = np.frombuffer(zlib.decompress(idat), np.uint8).reshape(h, 1 + 3 * w)
    assert not rows[:, 0].any()
    return rows[:, 1:].reshape(h, w, 3)


# --- persistence ------------------------------------------------------------------------------------------------
def test_saved_histograms_load_back_identical(tmp_path):
    s = _lognormal_set()
    p = R.save_histograms(tmp_path / "run.npz", s)
    assert p == tmp_path / "run.npz"
    assert np.array_equal(R.load_histograms(p), s)


def test_save_keeps_the_exact_file_name_without_npz_suffix(tmp_path):
    R.save_histograms(tmp_path / "latency.bin", _lognormal_set())
    assert [p.name for p in tmp_path.iterdir()] == ["latency.bin"]


def test_raw_shared_memory_dump_loads_as_a_set(tmp_path):
    s = _lognormal_set()
    (tmp_path / "raw").write_bytes(s.tobytes())
    assert np.array_equal(R.load_histograms(tmp_path / "raw"), s)


def test_save_rejects_a_wrongly_shaped_array(tmp_path):
    with pytest.raises(ValueError):
        R.save_histograms(tmp_path / "x.npz", np.zeros((3, 10), np.int64))


def test_loading_a_file_of_another_layout_is_a_histogram_file_error(tmp_path):
    p = tmp_path / "old.npz"
    np.savez(p, hist=L.new_set(), layout=np.array([99, 1, 2, 3, 4, 5]), stages=np.array(L.STAGE_SLUGS))
    with pytest.raises(R.HistogramFileError, match="another histogram layout"):
        R.load_histograms(p)


def test_loading_garbage_is_a_histogram_file_error(tmp_path):
    p = tmp_path / "junk"
    p.write_bytes(b"not a histogram")
    with pytest.raises(R.HistogramFileError):
        R.load_histograms(p)


# --- table and status line ----------------------------------------------------------------------------------------
def test_table_has_one_line_per_stage_with_percentiles_and_their_units():
    s = _set_with({L.STAGE_TICK_TO_TRADE: range(1, 201), L.STAGE_FEED: [150] * 10})
    lines = R.format_table(s).splitlines()
    assert len(lines) == 1 + L.N_STAGES
    assert lines[0].split()[:8] == ["stage", "count", "p50", "p90", "p99", "p99.9", "p99.99", "max"]
    ttt = lines[1 + L.STAGE_TICK_TO_TRADE].split()
    assert ttt == ["tick-to-trade", "200", "100ns", "180ns", "198ns", "200ns", "200ns", "200ns"]
    assert lines[1 + L.STAGE_FEED].split()[1:4] == ["10", "150ns", "150ns"]


@pytest.mark.parametrize("ns,text", [(0, "0ns"), (999, "999ns"), (999.6, "1.000us"), (12_345, "12.345us"),
                                     (999_999, "999.999us"), (999_999.6, "1.000ms"), (123_456_789, "123.457ms"),
                                     (1_000_000_000, "1.000s"), (3_600 * 10**9, "3600.000s"),
                                     (5 * 3_600 * 10**9, "18000s"), (10**17, "100000000s")])
def test_table_cells_scale_their_unit_and_fit_a_column(ns, text):
    assert R.table_duration(ns) == text
    assert len(text) < R.CELL_WIDTH


def test_table_keeps_its_columns_from_nanoseconds_to_the_largest_trackable_value():
    # one stage per order of magnitude, up to the histograms' ceiling (137 s) and past it (saturated: counted
    # at the ceiling): the end of every cell falls at the same offset on every line
    values = [1, 999, 12_345, 856_063, 9_391_348, 137_339_000, 9_660_927_000, L.HIGHEST_TRACKABLE_NS,
              L.HIGHEST_TRACKABLE_NS * 100]
    s = _set_with({st: values[st:st + 3] for st in range(L.N_STAGES)})
    lines = [line.split("   !")[0] for line in R.format_table(s).splitlines()]   # less the saturation note
    ends = {tuple(m.end() for m in re.finditer(r"\S+", line[17:])) for line in lines}
    assert len(ends) == 1, "\n".join(lines)
    assert all(len(line[17:].split()) == 7 for line in lines)


def test_table_shows_empty_stages_as_dashes():
    line = R.format_table(L.new_set()).splitlines()[1 + L.STAGE_RING]
    assert line.split() == ["publish->consume", "0"] + ["-"] * 6


def test_table_flags_saturated_and_negative_values():
    s = _set_with({L.STAGE_WIRE: [-1, L.HIGHEST_TRACKABLE_NS + 5, 100]})
    line = R.format_table(s).splitlines()[1 + L.STAGE_WIRE]
    assert "1 above" in line and "1 negative" in line


def test_status_fields_are_tick_to_trade_p50_and_p99_in_ns():
    s = _set_with({L.STAGE_TICK_TO_TRADE: range(1, 201), L.STAGE_FEED: [10**6]})
    assert R.status_fields(s) == (100, 198)


def test_status_fields_since_a_previous_snapshot_cover_only_new_values():
    s = _set_with({L.STAGE_TICK_TO_TRADE: [10] * 100})
    before = L.snapshot(s)
    for _ in range(10):
        L.record_stage(s, L.STAGE_TICK_TO_TRADE, 200)
    assert R.status_fields(s, before) == (200, 200)


def test_status_fields_of_an_empty_set_are_zero():
    assert R.status_fields(L.new_set()) == (0, 0)


@pytest.mark.parametrize("ns,text", [(850, "850ns"), (12_345, "12.3us"), (4_560_000, "4.56ms"),
                                     (1_200_000_000, "1.20s")])
def test_durations_are_shortened_for_the_status_line(ns, text):
    assert R.format_duration(ns) == text


def test_status_text_shows_tick_to_trade_p50_and_p99():
    s = _set_with({L.STAGE_TICK_TO_TRADE: [8_000] * 98 + [25_000] * 2})
    assert R.status_text(s) == "t2t p50 8.0us p99 25.0us"
    assert R.status_text(L.new_set()) == "t2t -"
    assert R.status_text(s, L.snapshot(s)) == "t2t -"  # nothing new since the previous snapshot


# --- .hgrm --------------------------------------------------------------------------------------------------------
def _hgrm_rows(text):
    return [ln for ln in text.splitlines()[2:] if ln and not ln.startswith("#")]


def test_hgrm_has_header_table_and_three_footer_lines():
    text = R.hgrm_text(_lognormal_set()[L.STAGE_TICK_TO_TRADE])
    lines = text.splitlines()
    assert lines[0].split() == ["Value", "Percentile", "TotalCount", "1/(1-Percentile)"]
    assert lines[1] == ""
    assert lines[-3].startswith("#[Mean    = ") and "StdDeviation   = " in lines[-3]
    assert lines[-2].startswith("#[Max     = ") and "Total count    = " in lines[-2]
    assert lines[-1] == f"#[Buckets = {L.N_POW2_BUCKETS:12d}, SubBuckets     = {L.SUB_BUCKET_COUNT:12d}]"


def test_hgrm_rows_use_hdrhistogram_column_widths():
    rows = _hgrm_rows(R.hgrm_text(_lognormal_set()[0]))
    first, last = rows[0], rows[-1]
    assert len(first) == 12 + 1 + 14 + 1 + 10 + 1 + 14
    assert first[13:27] == "0.000000000000" and first.endswith("1.00")
    assert len(last) == 12 + 1 + 14 + 1 + 10 and last[13:27] == "1.000000000000"


def test_hgrm_percentile_levels_step_by_ticks_per_half_distance():
    rows = _hgrm_rows(R.hgrm_text(_set_with({0: range(1, 10_001)})[0]))
    levels = [float(r.split()[1]) for r in rows]
    assert levels[:8] == pytest.approx([0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.55, 0.6])
    assert 0.775 in [round(v, 6) for v in levels]
    assert all(b >= a for a, b in zip(levels, levels[1:]))


def test_hgrm_values_counts_and_footer_agree_with_the_histogram():
    h = _lognormal_set()[L.STAGE_RISK]
    text = R.hgrm_text(h)
    rows = [r.split() for r in _hgrm_rows(text)]
    for value, pct, cum, *_ in rows:
        # every row's value is the percentile at its level (values are scaled to microseconds)
        q = float(pct) * 100
        if 0 < q < 100:
            assert float(value) == pytest.approx(L.percentile(h, q) / 1000, rel=L.MAX_RELATIVE_ERROR)
    assert int(rows[-1][2]) == L.count(h)
    assert float(rows[-1][0]) == pytest.approx(L.max_value(h) / 1000, abs=1e-3)
    assert float(rows[0][0]) == pytest.approx(L.min_value(h) / 1000, abs=1e-3)
    counts = [int(r[2]) for r in rows]
    assert counts == sorted(counts)
    mean_line = text.splitlines()[-3]
    assert float(mean_line.split("=")[1].split(",")[0]) == pytest.approx(L.mean(h) / 1000, abs=1e-3)


def test_hgrm_of_an_empty_histogram_has_no_rows_and_zero_footer():
    text = R.hgrm_text(L.new_histogram())
    assert _hgrm_rows(text) == []
    assert "Total count    =            0" in text


def test_hgrm_scaling_ratio_one_prints_nanoseconds():
    rows = _hgrm_rows(R.hgrm_text(_set_with({0: [150]})[0], scaling_ratio=1.0))
    assert float(rows[-1].split()[0]) == 150.0


# --- PNG ----------------------------------------------------------------------------------------------------------
def test_png_writer_round_trips_pixels():
    img = np.random.default_rng(0).integers(0, 256, (17, 23, 3), dtype=np.uint8)
    assert np.array_equal(_decode_png(R.png_bytes(img)), img)


def test_plot_draws_a_curve_in_each_recorded_stage_colour(tmp_path):
    s = _set_with({L.STAGE_FEED: range(100, 5000, 7), L.STAGE_TICK_TO_TRADE: range(5_000, 80_000, 13)})
    img = _decode_png(R.write_plot(s, tmp_path / "p.png").read_bytes())
    colours = {tuple(c) for c in img.reshape(-1, 3)}
    assert R.STAGE_COLORS[L.STAGE_FEED] in colours
    assert R.STAGE_COLORS[L.STAGE_TICK_TO_TRADE] in colours
    assert R.STAGE_COLORS[L.STAGE_RING] not in colours  # no samples, no curve


def test_plot_places_the_slower_stage_higher():
    s = _set_with({L.STAGE_FEED: [1_000] * 50, L.STAGE_WIRE: [100_000] * 50})
    img = R.render_plot(s)
    mid_col = img[:, img.shape[1] // 2]
    rows_of = {st: np.flatnonzero((mid_col == R.STAGE_COLORS[st]).all(axis=1)) for st in (L.STAGE_FEED, L.STAGE_WIRE)}
    assert rows_of[L.STAGE_WIRE].max() < rows_of[L.STAGE_FEED].min()


def test_plot_of_an_empty_set_is_still_an_image():
    img = R.render_plot(L.new_set())
    assert img.shape == (600, 960, 3) and (img == 0).any()


@pytest.mark.skipif(shutil.which("file") is None, reason="file(1) not installed")
def test_plot_png_is_recognised_by_libmagic(tmp_path):
    p = R.write_plot(_lognormal_set(), tmp_path / "p.png")
    out = subprocess.run(["file", str(p)], capture_output=True, text=True, timeout=20)
    assert "PNG image data, 960 x 600, 8-bit/color RGB" in out.stdout


# --- CLI ----------------------------------------------------------------------------------------------------------
def test_main_prints_table_and_writes_hgrm_and_png(tmp_path, capsys):
    s = _lognormal_set()
    R.save_histograms(tmp_path / "h.npz", s)
    out = tmp_path / "out"
    assert R.main(["--hist", str(tmp_path / "h.npz"), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert R.format_table(s) in printed
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted([f"{slug}.hgrm" for slug in L.STAGE_SLUGS] + [R.PLOT_NAME])
    assert (out / "tick_to_trade.hgrm").read_text() == R.hgrm_text(s[L.STAGE_TICK_TO_TRADE])


def test_run_report_leaves_a_file_that_main_reads(tmp_path, capsys):
    s = _lognormal_set(n=2_000)
    paths = R.write_run_report(s, tmp_path / "run")
    assert tmp_path / "run" / R.HIST_FILE_NAME in paths
    assert (tmp_path / "run" / "latency" / "tick_to_trade.hgrm").is_file()
    assert (tmp_path / "run" / "latency" / R.PLOT_NAME).is_file()
    assert R.main(["--hist", str(tmp_path / "run" / R.HIST_FILE_NAME), "--out", str(tmp_path / "rep")]) == 0
    assert R.format_table(s) in capsys.readouterr().out


def test_main_with_missing_file_is_one_line_error_and_exit_2(tmp_path, capsys):
    assert R.main(["--hist", str(tmp_path / "nope.npz"), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no histogram file" in err


def test_main_with_bad_option_is_one_line_error_and_exit_2(capsys):
    with pytest.raises(SystemExit) as e:
        R.main(["--bogus"])
    assert e.value.code == 2
    assert capsys.readouterr().err.count("\n") == 1


def test_module_runs_as_a_script(tmp_path):
    R.save_histograms(tmp_path / "h.npz", _lognormal_set(n=500))
    out = subprocess.run([sys.executable, "-m", "aegis.app.report", "--hist", str(tmp_path / "h.npz"), "--out",
                          str(tmp_path / "o"), "--no-plot"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "tick-to-trade" in out.stdout and not (tmp_path / "o" / R.PLOT_NAME).exists()
