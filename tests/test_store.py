"""The market-data store: import, replay from it (same results as from CSV), integrity (checksums, atomic import)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from aegis.core.records import KIND_QUOTE, KIND_TRADE, MARKET_DTYPE
from aegis.replay import run as replay
from aegis.replay import store as S

sys.path.insert(0, str(Path(__file__).parent))
import marketdays  # noqa: E402

DAYS = marketdays.days("2024-03-01", 2)
ROWS = 3000


@pytest.fixture(scope="module", autouse=True)
def compiled(tmp_path_factory):
    marketdays.warm_replay(tmp_path_factory.mktemp("warm"))


@pytest.fixture()
def csvs(tmp_path):
    d = tmp_path / "csv"
    d.mkdir()
    out = [marketdays.write_day(d, "BTCUSDT", day, ROWS, seed=i) for i, day in enumerate(DAYS)]
    out.append(marketdays.write_day(d, "ETHUSDT", DAYS[0], ROWS // 2, seed=9, mid0=2500.0, tick=0.01))
    return out


def _import(files, to) -> int:
    return S.main(["import", *map(str, files), "--to", str(to)])


def _replay(inputs, out) -> dict:
    assert replay.main([*map(str, inputs), "--param", "fast=5", "--param", "slow=40", "--out", str(out),
                        "--no-progress"]) == 0
    return json.loads((out / "summary.json").read_text())


def test_import_partitions_by_symbol_and_day_as_plain_npy(csvs, tmp_path):
    root = tmp_path / "store"
    assert _import(csvs, root) == 0
    st = S.Store(root)
    got = sorted((p.symbol, p.day, p.stream, p.rows) for p in st.select())
    assert got == [("BTCUSDT", DAYS[0], "bookTicker", ROWS), ("BTCUSDT", DAYS[1], "bookTicker", ROWS),
                   ("ETHUSDT", DAYS[0], "bookTicker", ROWS // 2)]
    p = st.select(["BTCUSDT"], DAYS[1], DAYS[1])[0]
    a = np.load(p.path, mmap_mode="r")          # any numpy reads a partition: a bookTicker's quote fields only
    assert p.layout == "quote" and a.dtype == S.QUOTE_ROW and len(a) == ROWS
    assert (np.diff(a["recv_ts"]) >= 0).all()
    assert a["recv_ts"][0] // S.DAY_NS == a["recv_ts"][-1] // S.DAY_NS
    r = S.to_records(p.layout, np.array(a), 0, np.zeros(ROWS, MARKET_DTYPE))
    assert (r["symbol"] == 0).all() and (r["bid_px"] > 0).all() and (r["kind"] == KIND_QUOTE).all()
    assert (r["pub_ts"] == r["recv_ts"]).all() and (r["seq"] == np.arange(ROWS)).all()
    assert S.sum64(r) == p.sum64                # the manifest's sum64 is of the records, its CRC-32 of the file


def test_replay_from_the_store_gives_the_same_results_as_from_csv(csvs, tmp_path):
    root = tmp_path / "store"
    assert _import(csvs, root) == 0
    a = _replay(csvs, tmp_path / "from-csv")
    b = _replay([root], tmp_path / "from-store")
    a.pop("inputs")
    b.pop("inputs")
    assert a == b and a["counts"]["records"] == 2 * ROWS + ROWS // 2 and a["counts"]["orders_accepted"] > 10
    for name in ("trades.csv", "orders.csv", "equity.csv"):
        assert (tmp_path / "from-csv" / name).read_bytes() == (tmp_path / "from-store" / name).read_bytes()
    # a symbol directory of the store selects that symbol's partitions only
    c = _replay([root / "ETHUSDT"], tmp_path / "eth")
    assert c["counts"]["records"] == ROWS // 2 and list(c["per_symbol"]) in ([], ["ETHUSDT"])


_BID = S.QUOTE_ROW.fields["bid_px"][1] + 1   # a byte of a bookTicker row's bid price


def _flip_byte(path: Path, offset: int) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        b = f.read(1)
        f.seek(offset)
        f.write(bytes([b[0] ^ 0x40]))


RESULT_FILES = ["equity.csv", "equity.png", "orders.csv", "summary.json", "trades.csv"]


@pytest.mark.parametrize("damage", ["flip", "truncate", "flip merged", "flip general merge"])
def test_a_damaged_partition_is_named_in_one_line_exit_2(csvs, tmp_path, capsys, damage, monkeypatch):
    root = tmp_path / "store"
    assert _import(csvs, root) == 0
    # BTCUSDT's second day overlaps nothing (replayed straight from its mapping); ETHUSDT's day overlaps BTCUSDT's
    # first, so it goes through the store's merge, or with MERGE_MAX 1 through replay's general merge
    day, sym = (DAYS[0], "ETHUSDT") if "merge" in damage else (DAYS[1], "BTCUSDT")
    if damage == "flip general merge":
        monkeypatch.setattr(S, "MERGE_MAX", 1)
    p = S.Store(root).select([sym], day, day)[0]
    if damage.startswith("flip"):
        _flip_byte(p.path, S.HEADER_BYTES + 1000 * p.row_dtype.itemsize + _BID)   # one bid price bit
    else:
        os.truncate(p.path, p.path.stat().st_size - p.row_dtype.itemsize)
    capsys.readouterr()
    assert S.main(["verify", str(root)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"damaged partition {p.rel}" in err[0]
    rc = replay.main([str(root), "--param", "fast=5", "--param", "slow=40", "--out", str(tmp_path / "o"),
                      "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and f"damaged partition {p.rel}" in err[0]
    assert os.listdir(tmp_path / "o") == []


@pytest.mark.parametrize("path", ["lone", "merged", "general merge"])
@pytest.mark.parametrize("change", ["cut after the open", "replaced during the open"])
def test_a_partition_changed_under_a_replay_is_named_and_not_read(csvs, tmp_path, change, path):
    """Every partition is read from its file as the replay goes (read_rows), on each of replay's three paths: a
    file cut short after it was opened (read through a mapping: SIGBUS, exit -7, no message), or replaced by
    another while it was being opened, is a damaged partition named in one line, exit 2; never fewer rows than the
    manifest's, nor another file's rows under the checked one's name. The replay runs in a child, so that a crash
    is this test's failure and not the end of the test session."""
    root = tmp_path / "store"
    assert _import(csvs, root) == 0
    # BTCUSDT's second day overlaps nothing; ETHUSDT's day overlaps BTCUSDT's first, so it goes through the store's
    # merge, or with MERGE_MAX 1 through replay's general merge
    day, sym = (DAYS[1], "BTCUSDT") if path == "lone" else (DAYS[0], "ETHUSDT")
    p = S.Store(root).select([sym], day, day)[0]
    child = textwrap.dedent(f"""
        import os, shutil, sys
        from aegis.replay import run as replay, store as S
        rel, path = {p.rel!r}, {str(p.path)!r}
        if {path == "general merge"}:
            S.MERGE_MAX = 1
        if {change == "cut after the open"}:
            opened = S.StoreSource.open
            def then_cut(self):
                recs = opened(self)
                if self.part.rel == rel and os.path.getsize(path) > S.HEADER_BYTES + 100 * 128:
                    os.truncate(path, S.HEADER_BYTES + 100 * 128)
                return recs
            S.StoreSource.open = then_cut
        else:
            mapped = S.open_partition
            def then_replace(part, *a, **kw):
                recs = mapped(part, *a, **kw)
                if part.rel == rel:
                    shutil.copyfile(path, path + ".copy")
                    os.replace(path + ".copy", path)
                return recs
            S.open_partition = then_replace
        sys.exit(replay.main([{str(root)!r}, "--param", "fast=5", "--param", "slow=40",
                              "--out", {str(tmp_path / "o")!r}, "--no-progress"]))
        """)
    repo = Path(__file__).resolve().parents[1]
    r = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, timeout=300, cwd=repo,
                       env=dict(os.environ, PYTHONPATH=str(repo)))
    err = r.stderr.strip().splitlines()
    why = "bytes on disk, manifest says" if change == "cut after the open" else \
        "the file changed while it was being opened"
    assert r.returncode == 2 and len(err) == 1 and f"damaged partition {p.rel}: " in err[0] and why in err[0], \
        (r.returncode, r.stderr[-2000:])
    assert os.listdir(tmp_path / "o") == []


def test_sum64_is_the_four_lane_recurrence_however_the_records_are_sliced():
    """The vectorised sum64 gives what the recurrence it stands for gives (what every manifest holds), slice by
    slice as a replay takes it as well as in one piece."""
    rng = np.random.default_rng(7)
    recs = np.frombuffer(rng.integers(0, 256, 37 * MARKET_DTYPE.itemsize, dtype=np.uint8).tobytes(), MARKET_DTYPE)
    st = [0] * 8
    for i, w in enumerate(recs.view(np.uint64).tolist()):   # lane i % 4: s += w, t += s (mod 2^64)
        st[i % 4] = (st[i % 4] + w) % 2**64
        st[4 + i % 4] = (st[4 + i % 4] + st[i % 4]) % 2**64
    want = S._sum64_fold(np.array(st, np.uint64))
    assert S.sum64(recs) == want
    lanes = np.zeros(S.SUM64_LANES, np.uint64)
    for a, b in ((0, 1), (1, 2), (2, 20), (20, 37)):
        S.sum64_step(recs[a:b].view(np.uint64), lanes)
    assert S._sum64_fold(lanes) == want


def _day_store(tmp_path: Path) -> tuple[Path, S.Partition]:
    """A store of one 200,000-quote day: more than three of the reads replay hands the core (READ_ROWS), so damage
    can sit past the first one, and quotes enough for ema_cross to trade before it."""
    d = tmp_path / "csv"
    d.mkdir()
    root = tmp_path / "store"
    assert _import([marketdays.write_day(d, "BTCUSDT", DAYS[0], 200_000, seed=4)], root) == 0
    (p,) = S.Store(root).select()
    assert p.rows > 3 * S.READ_ROWS
    return root, p


@pytest.mark.parametrize("where", ["middle", "last slice"])
def test_damage_found_by_the_replays_own_pass_fails_it_with_no_result_left(tmp_path, monkeypatch, where):
    """The first open sums a partition as it replays it, so the damage is known only at the partition's end, after
    the core has replayed all of it: the command still fails in one line naming it, exit 2, and no file in --out
    looks like a result (a previous run's included); the same through the library call a sweep trial makes."""
    from aegis.replay import metrics
    from aegis.research import sweep
    root, p = _day_store(tmp_path)
    out = tmp_path / "out"
    repo = Path(__file__).resolve().parents[1]
    cmd = [sys.executable, "-m", "aegis", "replay", str(root), "--param", "fast=5", "--param", "slow=40", "--out",
           str(out), "--no-progress"]
    env = dict(os.environ, PYTHONPATH=str(repo))
    ok = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env, cwd=repo)
    assert ok.returncode == 0, ok.stderr
    assert sorted(os.listdir(out)) == RESULT_FILES and json.loads((out / "summary.json").read_text())["counts"][
        "orders_accepted"] > 100
    row = p.rows // 2 if where == "middle" else p.rows - 10   # the second slice, or the last
    _flip_byte(p.path, S.HEADER_BYTES + row * p.row_dtype.itemsize + _BID)
    bad = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env, cwd=repo)
    err = bad.stderr.strip().splitlines()
    assert bad.returncode == 2 and len(err) == 1, bad.stderr
    assert err[0].startswith("aegis replay: error: ") and f"damaged partition {p.rel}: checksum" in err[0]
    assert os.listdir(out) == []
    # in-process, as sweep.evaluate runs a trial on a worker that has not verified the partition
    lib = tmp_path / "lib"
    found = []
    discard = metrics.Collector.discard

    def spy(self):   # what the replay had written when the damage was found
        found.append((self.n_fills, (lib / "trades.csv").stat().st_size if self.out_dir else None))
        discard(self)
    monkeypatch.setattr(metrics.Collector, "discard", spy)
    ctx = {"strategy": "ema_cross", "fixed": {}, "replay_args": []}
    with pytest.raises(S.StoreError, match=f"^damaged partition {p.rel}: checksum "):
        sweep.evaluate(ctx, {"fast": 5, "slow": 40}, [str(p.path)], str(lib))
    assert found[0][0] > 100 and found[0][1] > 10_000   # fills were written before the end of the partition
    assert os.listdir(lib) == []
    # a failed check marks nothing verified: the next open checks again
    with pytest.raises(S.StoreError, match=f"^damaged partition {p.rel}: checksum "):
        sweep.evaluate(ctx, {"fast": 5, "slow": 40}, [str(p.path)], None)


def test_a_first_open_is_checked_by_the_replay_core_as_it_reads_and_a_verified_one_is_not_summed(tmp_path,
                                                                                                monkeypatch):
    root, p = _day_store(tmp_path)
    feeds, sums = [], []
    step, feed = S.sum64_step, replay.ReplayCore.feed
    monkeypatch.setattr(S, "sum64_step", lambda w, st: (sums.append(len(w)), step(w, st))[1])

    def counted(self, recs, lanes=None):   # (rows, words the core added to the partition's sum64)
        before = None if lanes is None else int(lanes[S.SUM64_LANES])
        feed(self, recs, lanes)
        feeds.append((len(recs), None if lanes is None else int(lanes[S.SUM64_LANES]) - before))
    monkeypatch.setattr(replay.ReplayCore, "feed", counted)
    a = _replay([root], tmp_path / "first")
    slices = [min(S.READ_ROWS, p.rows - i) for i in range(0, p.rows, S.READ_ROWS)]
    # the core summed every row as it read it, once: the file is read in one pass, and no pass of the check's own
    assert [f for f in feeds if f[0]] == [(n, n * S.RECORD_WORDS) for n in slices] and sums == []
    feeds.clear()
    b = _replay([root], tmp_path / "again")             # checked by the first open in this process
    S._verified.clear()
    S.trust(S.identities([p]))                          # what a sweep worker does with the sweep's own verify()
    c = _replay([root], tmp_path / "trusted")
    assert [f for f in feeds if f[0]] == [(n, None) for n in slices] * 2 and sums == []
    a.pop("inputs"), b.pop("inputs"), c.pop("inputs")
    assert a == b == c and a["counts"]["orders_accepted"] > 100
    for name in RESULT_FILES:
        assert (tmp_path / "first" / name).read_bytes() == (tmp_path / "trusted" / name).read_bytes(), name


def test_an_interrupted_import_leaves_nothing_replay_reads(csvs, tmp_path, monkeypatch):
    root = tmp_path / "store"
    assert _import(csvs[:1], root) == 0
    before = (root / S.MANIFEST).read_bytes()

    # killed while writing the second file's partition: its temp file is not a partition
    def boom(self, recs):
        raise KeyboardInterrupt
    monkeypatch.setattr(S._PartWriter, "append", boom)
    with pytest.raises(KeyboardInterrupt):
        S.import_files([str(csvs[1])], root)
    monkeypatch.undo()
    # killed after the partition was renamed into place but before the manifest listed it
    monkeypatch.setattr(S.Store, "save", lambda self: (_ for _ in ()).throw(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        S.import_files([str(csvs[1])], root)
    monkeypatch.undo()
    assert (root / S.MANIFEST).read_bytes() == before
    orphans = [f for f in root.rglob("*") if f.is_file() and f.name not in (S.MANIFEST, S.LOCK)
               and f.resolve() not in {p.path.resolve() for p in S.Store(root).select()}]
    assert orphans   # the renamed, unlisted partition of the second kill
    assert [p.day for p in S.Store(root).select()] == [DAYS[0]]
    assert replay.expand_inputs([str(root)]) == [str(S.Store(root).select()[0].path)]
    # the next import cleans up and completes
    assert _import(csvs[1:2], root) == 0
    files = {f.resolve() for f in root.rglob("*.npy")}
    assert files == {p.path.resolve() for p in S.Store(root).select()} and len(files) == 2


def test_reimporting_a_file_replaces_its_partition(csvs, tmp_path):
    root = tmp_path / "store"
    assert _import(csvs[:1], root) == 0
    old = S.Store(root).select()[0]
    marketdays.write_day(csvs[0].parent, "BTCUSDT", DAYS[0], ROWS // 3, seed=5)
    assert _import(csvs[:1], root) == 0
    new = S.Store(root).select()
    assert len(new) == 1 and new[0].rows == ROWS // 3 and not old.path.exists()


def _trades_csv(path: Path, n: int, t0_ms: int) -> Path:
    # one row going back in time (its replay time is clamped, its exchange time kept: exch_ts != recv_ts)
    times = [t0_ms + 37 * i - (500 if i == n // 2 else 0) for i in range(n)]
    path.write_text("".join(f"{i},{2500 + (i % 9) / 100:.2f},{0.001 * (1 + i % 4):.3f},{2 * i},{2 * i + 1},{t},"
                            f"{'true' if i % 3 else 'false'}\n" for i, t in enumerate(times)))
    return path


def test_public_data_is_stored_in_its_streams_layout_and_read_back_as_the_same_records(csvs, tmp_path):
    """bookTicker and aggTrades partitions hold only the fields their files fill (56 and 64 bytes a row, not 128);
    what a reader gets back is field for field the records replay makes from the CSV, and replay from the store
    gives byte-identical results. A store of version 1 (whole records, no layout in its manifest) replays the same."""
    trades = _trades_csv(csvs[0].parent / f"ETHUSDT-aggTrades-{DAYS[0]}.csv", 2000, marketdays.day_ms(DAYS[0]))
    files = [*csvs, trades]
    root = tmp_path / "store"
    assert _import(files, root) == 0
    parts = S.Store(root).select()
    assert sorted({(p.stream, p.layout, p.row_dtype.itemsize) for p in parts}) == [
        ("aggTrades", "trade", 64), ("bookTicker", "quote", 56)]
    for p in parts:
        assert p.nbytes == p.rows * p.row_dtype.itemsize == p.path.stat().st_size - S.HEADER_BYTES
        _, (src,) = replay.open_sources([next(str(f) for f in files if Path(f).name == p.source)], None, None, None,
                                        None)
        want = np.concatenate(list(src.chunks()))
        got = np.concatenate(list(S.StoreSource(p, 0, chunk_rows=700).chunks()))
        assert len(got) == len(want) == p.rows
        for f in MARKET_DTYPE.names:
            if f not in ("symbol", "pub_ts", "seq"):   # import's stamps: 0, recv_ts, the row's index
                assert np.array_equal(got[f], want[f]), (p.stream, f)
        if p.stream == "aggTrades":
            assert (got["exch_ts"] != got["recv_ts"]).sum() >= 1 and set(got["side"].tolist()) == {-1, 1}
    a = _replay(files, tmp_path / "from-csv")
    b = _replay([root], tmp_path / "from-store")
    # the same data as a version 1 store: every partition as whole records, a manifest without layouts
    v1 = tmp_path / "v1"
    st = S.Store(v1)
    for p in parts:
        w = S._PartWriter(v1, p.symbol, p.day, p.stream, p.source, layout="market")
        for c in S.StoreSource(p, 0).chunks():
            w.append(c)
        q = w.commit()
        st.parts[q.rel] = q
    st.save()
    man = json.loads((v1 / S.MANIFEST).read_text())
    man["version"] = 1
    for d in man["partitions"].values():
        assert d.pop("layout") == "market"
    (v1 / S.MANIFEST).write_text(json.dumps(man))
    assert {p.layout for p in S.Store(v1).select()} == {"market"}
    c = _replay([v1], tmp_path / "from-v1")
    for x in (a, b, c):
        x.pop("inputs")
    assert a == b == c and a["counts"]["records"] == 2 * ROWS + ROWS // 2 + 2000
    for name in ("trades.csv", "orders.csv", "equity.csv"):
        assert (tmp_path / "from-csv" / name).read_bytes() == (tmp_path / "from-store" / name).read_bytes() \
            == (tmp_path / "from-v1" / name).read_bytes()


def test_records_a_layout_does_not_hold_are_refused_at_import_not_stored_wrong(tmp_path):
    recs = np.zeros(4, MARKET_DTYPE)
    recs["recv_ts"] = recs["exch_ts"] = recs["pub_ts"] = np.arange(4) + 1
    recs["seq"] = np.arange(4)
    recs["kind"] = KIND_QUOTE
    recs["bid_px"] = 1.0
    rows, back = S._stored("quote", recs, 0)
    assert rows.dtype == S.QUOTE_ROW and all(np.array_equal(back[f], recs[f]) for f in MARKET_DTYPE.names)
    for field, value in (("px", 2.0), ("kind", KIND_TRADE), ("seq", 7), ("pub_ts", 0)):
        bad = recs.copy()
        bad[field][2] = value
        with pytest.raises(ValueError, match=field):
            S._stored("quote", bad, 0)
    with pytest.raises(ValueError, match="bid_px"):   # a quote is not a trade
        S._stored("trade", recs, 0)


def test_store_reader_chunks_are_the_files_rows_read_only_for_symbol_0(csvs, tmp_path):
    root = tmp_path / "store"
    assert _import(csvs[:1], root) == 0
    part = S.Store(root).select()[0]
    chunks = list(S.StoreSource(part, 0, chunk_rows=1000).chunks())
    assert [len(c) for c in chunks] == [1000, 1000, 1000]
    assert not any(c.flags.writeable for c in chunks)
    stored = S.to_records(part.layout, np.load(part.path), 0, np.zeros(part.rows, MARKET_DTYPE))
    assert all(np.array_equal(np.concatenate([c[f] for c in chunks]), stored[f]) for f in MARKET_DTYPE.names)
    moved = list(S.StoreSource(part, 3, chunk_rows=1000).chunks())
    assert all((c["symbol"] == 3).all() for c in moved)
    assert np.array_equal(np.concatenate(moved)["bid_px"], np.concatenate(chunks)["bid_px"])


@pytest.mark.parametrize("argv, message", [
    (["verify", "nowhere"], "not a store"),
    (["import", "missing.csv", "--to", "x"], "no such file"),
    (["import"], "required"),
])
def test_data_command_mistakes_are_one_line_exit_2(tmp_path, capsys, argv, message, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert S.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]


def test_engine_modules_import_no_research_dependency():
    """The hot path (and replay, and the store) never pulls in Ray, Optuna, pyarrow or matplotlib."""
    code = ("import sys\n"
            "import aegis.core.records, aegis.core.ring, aegis.feed.process, aegis.brain.process, "
            "aegis.trade.sender, aegis.trade.risk, aegis.binance.client, aegis.app.cli, aegis.app.supervisor, "
            "aegis.replay.run, aegis.replay.store\n"
            "bad = sorted(m for m in ('ray', 'optuna', 'pyarrow', 'matplotlib', 'pandas') if m in sys.modules)\n"
            "print(','.join(bad))\n")
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == ""


def test_a_feed_recording_imports_and_replays_like_the_recording(tmp_path):
    files = _quote_recording(tmp_path / "rec", filters=False)
    root = tmp_path / "store"
    assert _import(files, root) == 0
    (p,) = S.Store(root).select()
    assert p.stream.startswith("rec-feed-") and p.rows == 600 and p.day == DAYS[0]
    a = _replay(files, tmp_path / "from-rec")
    b = _replay([root], tmp_path / "from-store")
    a.pop("inputs")
    b.pop("inputs")
    assert a == b and a["counts"]["orders_accepted"] > 10
    for name in ("trades.csv", "orders.csv"):
        assert (tmp_path / "from-rec" / name).read_bytes() == (tmp_path / "from-store" / name).read_bytes()


BTC_FILTERS = {"symbol": "BTCUSDT", "status": "TRADING", "filters": [
    {"filterType": "PRICE_FILTER", "tickSize": "0.50", "minPrice": "1", "maxPrice": "1000000"},
    {"filterType": "LOT_SIZE", "stepSize": "0.01", "minQty": "0.01", "maxQty": "1000"},
    {"filterType": "MARKET_LOT_SIZE", "stepSize": "0.01", "minQty": "0.01", "maxQty": "100"},
    {"filterType": "MIN_NOTIONAL", "notional": "100"}]}


def _quote_recording(directory: Path, filters: bool) -> list[Path]:
    """A Feed recording of 600 BTCUSDT quotes; with filters, headed by the !exchangeInfo line the Feed writes."""
    from aegis.feed.recording import Recorder
    rec = Recorder(directory)
    if filters:
        other = dict(BTC_FILTERS, symbol="ETHUSDT")
        rec.set_exchange_info({"serverTime": 1, "symbols": [BTC_FILTERS, other]}, ["BTCUSDT"], {})
    t0 = marketdays.day_ms(DAYS[0])
    for i in range(600):
        m = 40_000 + (i * 7) % 11
        rec.write(5_000_000_000 + i * 500_000_000, "btcusdt@bookTicker",
                  {"e": "bookTicker", "u": 100 + i, "s": "BTCUSDT", "b": f"{m - 0.05:.2f}", "B": "5",
                   "a": f"{m + 0.05:.2f}", "A": "5", "T": t0 + i * 500, "E": t0 + i * 500})
    rec.close()
    return rec.files


def _replay_sized(inputs, out, capsys) -> tuple[dict, list[float], str]:
    """Replay with one unit = 500 USDT (0.0125 BTC before the step size rounds it); (summary, NEW order sizes,
    stderr)."""
    capsys.readouterr()
    assert replay.main([*map(str, inputs), "--param", "fast=5", "--param", "slow=40", "--brain", "unit_notional=500",
                        "--risk", "max_order_notional=0", "--risk", "max_position_notional=0", "--out", str(out),
                        "--no-progress"]) == 0
    err = capsys.readouterr().err
    rows = [r.split(",") for r in (out / "orders.csv").read_text().splitlines()]
    qty = [float(r[rows[0].index("qty")]) for r in rows[1:] if r[rows[0].index("action")] == "NEW"]
    return json.loads((out / "summary.json").read_text()), qty, err


def test_a_recordings_exchange_filters_are_kept_in_the_store_and_used_by_its_replay(tmp_path, capsys):
    files = _quote_recording(tmp_path / "rec", filters=True)
    root = tmp_path / "store"
    assert _import(files, root) == 0
    (p,) = S.Store(root).select()
    assert p.filters == BTC_FILTERS    # the partition's own symbol only, checksummed in the manifest
    entry = json.loads((root / S.MANIFEST).read_text())["partitions"][p.rel]
    assert entry["filters_crc32"] == f"{S.filters_crc(BTC_FILTERS):08x}"
    a, qa, err_a = _replay_sized(files, tmp_path / "from-rec", capsys)
    b, qb, err_b = _replay_sized([root], tmp_path / "from-store", capsys)
    a.pop("inputs")
    b.pop("inputs")
    assert a == b and a["counts"]["orders_accepted"] > 10
    for name in ("trades.csv", "orders.csv", "equity.csv"):
        assert (tmp_path / "from-rec" / name).read_bytes() == (tmp_path / "from-store" / name).read_bytes()
    # sizes quantised by the recorded step (0.01), not the built-in one (0.001) a filterless recording gets
    def steps(q):   # multiples of 0.01
        return abs(q * 100 - round(q * 100)) < 1e-9
    assert qa == qb and qa and all(steps(q) for q in qa)
    assert "filters" not in err_a and "filters" not in err_b
    plain = _quote_recording(tmp_path / "rec-plain", filters=False)
    assert _import(plain, tmp_path / "store-plain") == 0
    assert S.Store(tmp_path / "store-plain").select()[0].filters is None
    _, qc, err_c = _replay_sized([tmp_path / "store-plain"], tmp_path / "plain", capsys)
    # as the recording itself would say
    assert qc and not all(steps(q) for q in qc) and "carry no exchange filters" in err_c
    # a damaged row is named like a damaged partition, by replay and by `data verify`
    mf = json.loads((root / S.MANIFEST).read_text())
    mf["partitions"][p.rel]["filters"]["filters"][1]["stepSize"] = "0.001"
    (root / S.MANIFEST).write_text(json.dumps(mf))
    capsys.readouterr()
    assert replay.main([str(root), "--out", str(tmp_path / "bad"), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"damaged partition {p.rel}: exchange filters" in err[0]
    assert S.main(["verify", str(root)]) == 2
    assert f"damaged partition {p.rel}" in capsys.readouterr().err


def _part(root: Path, symbol: str, day: str, stream: str, t: np.ndarray, stamped: bool = True) -> S.Partition:
    """A partition written as import writes one (stamped: pub_ts and seq as replay's merge sets them, in the
    stream's layout), or as the first version of import did (pub_ts and seq 0, whole records)."""
    recs = np.zeros(len(t), MARKET_DTYPE)
    recs["recv_ts"] = recs["exch_ts"] = t
    if stamped:
        recs["pub_ts"] = t
        recs["seq"] = np.arange(len(t))
    if stream == "aggTrades":
        recs["px"] = np.arange(len(t)) + 1.5
        recs["qty"] = 0.25
        recs["side"] = np.where(np.arange(len(t)) % 3 == 0, -1, 1)
        recs["first_id"] = recs["prev_id"] = np.arange(len(t))
        recs["kind"] = KIND_TRADE
    else:
        recs["bid_px"] = np.arange(len(t)) + 1.0
        recs["ask_px"] = recs["bid_px"] + 1.0
        recs["kind"] = KIND_QUOTE
    recs["last_id"] = np.arange(len(t))
    w = S._PartWriter(root, symbol, day, stream, stream, layout=None if stamped else "market")
    w.append(recs)
    return w.commit()


@pytest.mark.parametrize("merge_max", [16, 2])
def test_store_batches_are_the_merge_of_the_partitions_and_a_lone_one_goes_unmerged(tmp_path, monkeypatch,
                                                                                     merge_max):
    """replay_batches gives the records in the order replay's general merge does (time, then input order, then
    position; ties across partitions included, and windows that end anywhere), and hands a partition that
    overlaps no other over as read, in one reused buffer."""
    monkeypatch.setattr(S, "MERGE_MAX", merge_max)   # 2: a group of 3 goes through the general merge
    monkeypatch.setattr(S, "READ_ROWS", 1000)
    monkeypatch.setattr(S, "MERGE_ROWS", 777)
    monkeypatch.setattr(S, "MERGE_WINDOW", 301)   # every overlapping partition read in several windows
    root = tmp_path / "store"
    d0 = marketdays.day_ms(DAYS[0]) * 1_000_000
    d1 = marketdays.day_ms(DAYS[1]) * 1_000_000
    rng = np.random.default_rng(3)
    st = S.Store(root)
    for p in (_part(root, "BTCUSDT", DAYS[0], "bookTicker", d0 + np.sort(rng.integers(0, 500, 3000)) * 1000),
              _part(root, "BTCUSDT", DAYS[0], "aggTrades", d0 + np.sort(rng.integers(0, 500, 2000)) * 1000),
              _part(root, "ETHUSDT", DAYS[0], "bookTicker", d0 + np.sort(rng.integers(100, 400, 1500)) * 1000),
              _part(root, "BTCUSDT", DAYS[1], "bookTicker", d1 + np.arange(2500) * 7)):   # overlaps nothing
        st.parts[p.rel] = p
    st.save()
    files = replay.expand_inputs([str(root)])

    def run(fn):
        _, srcs = replay.open_sources(files, None, None, None, None)
        out = []
        direct = []
        for b in fn(srcs):
            direct.append(not b.flags.owndata and isinstance(b.base, np.ndarray) and b.base.base is not None
                          and len(b) <= 1000 and b.dtype == MARKET_DTYPE)
            out.append(b.copy())
        whole = np.empty(sum(len(b) for b in out), MARKET_DTYPE)   # (np.concatenate packs away the padding)
        i = 0
        for b in out:
            whole[i:i + len(b)] = b
            i += len(b)
        return whole, direct, srcs

    old, _, _ = run(lambda srcs: replay.Merger(srcs).batches())
    new, _, srcs = run(lambda srcs: (b for b, _ in replay.feed_batches(srcs)))
    assert len(new) == len(old) == 9000
    for f in MARKET_DTYPE.names:
        if f != "seq":   # a lone partition keeps its stored seq (its row index); not read by the replay core
            assert np.array_equal(new[f], old[f]), f
    assert np.array_equal(new["seq"][:6500], old["seq"][:6500])
    assert [s.rows for s in srcs] == [s.part.rows for s in srcs] and all(s.progress()[0] == s.progress()[1]
                                                                          for s in srcs)
    # the lone day: read from the file into one reused buffer, not faulted in through the mapping
    _, srcs = replay.open_sources(files, None, None, None, None)
    lone = next(s for s in srcs if s.part.day == DAYS[1])
    mapped = lone.open()
    seen, rows = [], []
    for b, _ in replay.feed_batches(srcs):
        if len(b) and b["recv_ts"][0] >= d1:
            seen.append(b)
            rows.append(b.copy())
    assert [len(b) for b in seen] == [1000, 1000, 500]
    assert not any(np.shares_memory(b, mapped) for b in seen)
    assert all(np.shares_memory(b, seen[0]) for b in seen)
    stored = S.to_records(lone.part.layout, np.array(mapped), 0, np.zeros(len(mapped), MARKET_DTYPE))
    assert all(np.array_equal(np.concatenate([r[f] for r in rows]), stored[f]) for f in MARKET_DTYPE.names)
    # a partition imported before pub_ts and seq were stored is stamped on a copy, as the merge would
    old_root = tmp_path / "old-store"
    st = S.Store(old_root)
    p = _part(old_root, "BTCUSDT", DAYS[1], "bookTicker", d1 + np.arange(2500) * 7, stamped=False)
    st.parts[p.rel] = p
    st.save()
    _, srcs = replay.open_sources(replay.expand_inputs([str(old_root)]), None, None, None, None)
    got = [b.copy() for b, _ in replay.feed_batches(srcs)]
    assert all((b["pub_ts"] == b["recv_ts"]).all() for b in got) and sum(map(len, got)) == 2500
    assert np.array_equal(np.concatenate([b["seq"] for b in got]), np.arange(2500))
