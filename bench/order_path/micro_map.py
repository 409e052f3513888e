"""Journal line on the order path: write(2) vs a store into a MAP_SHARED, fallocated file; a thread fdatasyncs every
50 ms in both cases (as Journal's interval policy). One 192-byte line every 300 us, 4000 lines; ns per line."""
import mmap, os, sys, tempfile, threading, time
import numpy as np
from aegis.core.jit import njit
from aegis.binance import wire
from aegis.core.clock import now_ns
mode = sys.argv[1]
d = tempfile.mkdtemp()
path = os.path.join(d, "j")
fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
line = np.frombuffer(b'{"k":"req","t":1765000000000,"id":1234,"coid":"ae1234abcd-1234","sym":"BTCUSDT","side":"BUY","type":"MARKET","tif":"","qty":"0.012","px":"0","ro":false,"act":"new","x":1765000000000000000}\t0123abcd\n', np.uint8).copy()
N = 4000
SIZE = 4 << 20
if mode == "map":
    os.posix_fallocate(fd, 0, SIZE)
    mm = mmap.mmap(fd, SIZE, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
    buf = np.frombuffer(mm, np.uint8)
else:
    buf = np.zeros(1, np.uint8)
stop = threading.Event()
def sync():
    while not stop.wait(0.05):
        os.fdatasync(fd)
th = threading.Thread(target=sync, daemon=True); th.start()

@njit(nogil=True)
def one(mode_map, fd, buf, pos, line, n):
    t0 = now_ns()
    if mode_map:
        for k in range(n):
            buf[pos + k] = line[k]
    else:
        wire.write_all(fd, line, n)
    return now_ns() - t0

@njit(nogil=True)
def spin(ns):
    end = now_ns() + ns
    while now_ns() < end:
        pass

m = mode == "map"
one(m, fd if not m else -1, buf, 0, line, 0); spin(1)
lat = np.zeros(N, np.int64)
pos = 0
for i in range(N):
    lat[i] = one(m, fd, buf, pos, line, line.size)
    pos += line.size
    spin(300_000)
stop.set(); th.join()
print(f"{mode:5s} p50 {np.percentile(lat, 50):6.0f} p90 {np.percentile(lat, 90):6.0f} p99 {np.percentile(lat, 99):7.0f} "
      f"p99.9 {np.percentile(lat, 99.9):7.0f} ns  load {os.getloadavg()[0]:.2f}")
