"""scripts/tune_host.sh against a fake sysfs/procfs tree (AEGIS_SYSROOT): the CI host is never touched."""
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "tune_host.sh"
CPUS = (0, 1, 2, 3)
IDLE_STATES = (("POLL", 0), ("C1", 2), ("C6", 85))


def _w(root: Path, rel: str, text: str) -> None:
    p = root / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text + "\n")


def _untuned_host(root: Path) -> None:
    """A 4-CPU host in the state a stock distribution leaves it in."""
    cpu = "sys/devices/system/cpu"
    _w(root, f"{cpu}/online", "0-3")
    for c in CPUS:
        _w(root, f"{cpu}/cpu{c}/cpufreq/scaling_governor", "powersave")
        _w(root, f"{cpu}/cpu{c}/cpufreq/scaling_available_governors", "performance powersave")
        _w(root, f"{cpu}/cpu{c}/cpufreq/scaling_min_freq", "800000")
        _w(root, f"{cpu}/cpu{c}/cpufreq/scaling_max_freq", "3500000")
        for i, (name, lat) in enumerate(IDLE_STATES):
            _w(root, f"{cpu}/cpu{c}/cpuidle/state{i}/name", name)
            _w(root, f"{cpu}/cpu{c}/cpuidle/state{i}/latency", str(lat))
            _w(root, f"{cpu}/cpu{c}/cpuidle/state{i}/disable", "0")
    _w(root, f"{cpu}/intel_pstate/no_turbo", "0")
    _w(root, "sys/kernel/mm/transparent_hugepage/enabled", "[always] madvise never")
    _w(root, "sys/kernel/mm/transparent_hugepage/defrag", "[always] defer defer+madvise madvise never")
    _w(root, "proc/sys/vm/swappiness", "60")
    _w(root, "proc/sys/kernel/sched_rt_runtime_us", "950000")
    _w(root, "proc/sys/net/core/busy_poll", "0")
    _w(root, "proc/sys/net/core/busy_read", "0")
    _w(root, "proc/cmdline", "BOOT_IMAGE=/vmlinuz root=/dev/sda1 ro quiet")
    _w(root, "proc/1/comm", "systemd")
    _w(root, "proc/812/comm", "irqbalance")
    _w(root, "proc/self/timerslack_ns", "50000")
    _w(root, "proc/irq/default_smp_affinity", "f")
    for irq in (0, 1, 24, 25):
        _w(root, f"proc/irq/{irq}/smp_affinity_list", "0-3")
    _w(root, "proc/irq/30/smp_affinity_list", "0")


def _snapshot(root: Path) -> dict:
    return {str(p.relative_to(root)): p.read_text() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def host(tmp_path):
    root = tmp_path / "root"
    _untuned_host(root)
    log = tmp_path / "systemctl.log"
    fake_ctl = tmp_path / "systemctl"
    fake_ctl.write_text(f'#!/bin/sh\necho "$@" >> "{log}"\n')
    fake_ctl.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if not k.startswith("AEGIS_")}
    env.update(AEGIS_SYSROOT=str(root), AEGIS_TUNE_STATE=str(tmp_path / "state" / "tune.state"),
               AEGIS_SYSTEMCTL=str(fake_ctl), AEGIS_ASSUME_UID="0")

    class Host:
        pass

    h = Host()
    h.root, h.log, h.env, h.state = root, log, env, tmp_path / "state" / "tune.state"

    def run(*args, **env_over):
        e = dict(env, **env_over)
        return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, env=e, timeout=30)

    h.run = run
    return h


def _status(out: str) -> dict:
    """item -> status column of the report lines."""
    st = {}
    for line in out.splitlines():
        m = re.match(r"^(\S+)\s+(OK|needs change|needs reboot|advice|n/a|skipped|changing|would change)\s", line)
        if m:
            st[m.group(1)] = m.group(2)
    return st


def _read(root: Path, rel: str) -> str:
    return (root / rel).read_text().strip()


# --- check ----------------------------------------------------------------------------------------------------
def test_check_reports_every_item_of_an_untuned_host(host):
    r = host.run("check", "--cores", "2-3")
    assert r.returncode == 1, r.stderr
    assert _status(r.stdout) == {
        "governor": "needs change", "c-states": "needs change", "frequency": "needs change", "turbo": "advice",
        "thp": "needs change", "swappiness": "needs change", "irqbalance": "needs change",
        "irq-affinity": "needs change", "cmdline": "needs reboot", "rt-throttling": "needs change",
        "busy-poll": "needs change", "timer-slack": "advice"}


def test_check_is_the_default_mode_and_changes_nothing(host):
    before = _snapshot(host.root)
    r = host.run("--cores", "2-3")
    assert "mode=check" in r.stdout
    assert _snapshot(host.root) == before and not host.state.exists() and not host.log.exists()


def test_check_without_cores_skips_the_core_specific_items(host):
    st = _status(host.run().stdout)
    assert st["irq-affinity"] == "skipped" and st["cmdline"] == "skipped" and st["irqbalance"] == "advice"


def test_check_accepts_an_isolated_kernel_command_line(host):
    _w(host.root, "proc/cmdline", "ro isolcpus=managed_irq,domain,2-3 nohz_full=2,3 rcu_nocbs=1-3")
    assert _status(host.run("--cores", "2-3").stdout)["cmdline"] == "OK"


def test_check_wants_a_reboot_when_isolcpus_misses_an_engine_core(host):
    _w(host.root, "proc/cmdline", "ro isolcpus=2 nohz_full=2-3 rcu_nocbs=2-3")
    r = host.run("--cores", "2-3")
    assert _status(r.stdout)["cmdline"] == "needs reboot" and "isolcpus=2-3" in r.stdout


def test_check_only_flags_irqs_that_may_run_on_engine_cores(host):
    for irq in (0, 1, 24, 25):
        _w(host.root, f"proc/irq/{irq}/smp_affinity_list", "0-1")
    _w(host.root, "proc/irq/24/smp_affinity_list", "1,3")
    _w(host.root, "proc/irq/default_smp_affinity", "3")
    r = host.run("--cores", "2-3")
    assert _status(r.stdout)["irq-affinity"] == "needs change"
    assert "1 IRQs (24)" in r.stdout


def test_check_reports_missing_knobs_as_not_applicable(host):
    shutil.rmtree(host.root / "sys/kernel/mm")
    (host.root / "proc/sys/net/core/busy_poll").unlink()
    (host.root / "proc/sys/net/core/busy_read").unlink()
    st = _status(host.run().stdout)
    assert st["thp"] == "n/a" and st["busy-poll"] == "n/a"


def test_check_of_a_tuned_host_exits_zero(host):
    _w(host.root, "proc/cmdline", "ro isolcpus=2-3 nohz_full=2-3 rcu_nocbs=2-3")
    assert host.run("apply", "--cores", "2-3").returncode == 0
    (host.root / "proc/812/comm").write_text("bash\n")  # the fake systemctl cannot kill it: pretend it stopped
    r = host.run("check", "--cores", "2-3")
    assert r.returncode == 0, r.stdout
    assert set(_status(r.stdout).values()) <= {"OK", "advice"}


# --- apply ----------------------------------------------------------------------------------------------------
def test_apply_changes_the_fake_files(host):
    r = host.run("apply", "--cores", "2-3")
    assert r.returncode == 0, r.stdout + r.stderr
    cpu = "sys/devices/system/cpu"
    assert [_read(host.root, f"{cpu}/cpu{c}/cpufreq/scaling_governor") for c in CPUS] == \
        ["powersave", "powersave", "performance", "performance"]  # only engine cores
    assert [_read(host.root, f"{cpu}/cpu2/cpuidle/state{i}/disable") for i in range(3)] == ["0", "1", "1"]
    assert _read(host.root, f"{cpu}/cpu3/cpufreq/scaling_min_freq") == "3500000"
    assert _read(host.root, "sys/kernel/mm/transparent_hugepage/enabled") == "madvise"
    assert _read(host.root, "proc/sys/vm/swappiness") == "1"
    assert _read(host.root, "proc/sys/kernel/sched_rt_runtime_us") == "-1"
    assert _read(host.root, "proc/sys/net/core/busy_poll") == "50"
    assert _read(host.root, "proc/sys/net/core/busy_read") == "50"
    assert [_read(host.root, f"proc/irq/{i}/smp_affinity_list") for i in (0, 1, 24, 25, 30)] == ["0-1"] * 4 + ["0"]
    assert _read(host.root, "proc/irq/default_smp_affinity") == "3"
    assert _read(host.root, "proc/cmdline") == "BOOT_IMAGE=/vmlinuz root=/dev/sda1 ro quiet"  # advice only
    assert host.log.read_text() == "stop irqbalance\n"


def test_apply_without_cores_tunes_per_cpu_knobs_on_every_cpu_and_leaves_irqs(host):
    assert host.run("apply").returncode == 0
    cpu = "sys/devices/system/cpu"
    assert {_read(host.root, f"{cpu}/cpu{c}/cpufreq/scaling_governor") for c in CPUS} == {"performance"}
    assert _read(host.root, "proc/irq/0/smp_affinity_list") == "0-3"


def test_apply_saves_the_previous_values_once(host):
    host.run("apply", "--cores", "2-3")
    first = host.state.read_text()
    assert "\tproc/sys/vm/swappiness\t" not in first and f"{host.root}/proc/sys/vm/swappiness\t60" in first
    host.run("apply", "--cores", "2-3")
    lines = host.state.read_text().splitlines()
    assert len(lines) == len(set(lines)) == len(first.splitlines())


def test_dry_run_apply_changes_nothing_and_says_what_it_would_write(host):
    before = _snapshot(host.root)
    r = host.run("apply", "--dry-run", "--cores", "2-3")
    assert r.returncode == 0
    assert "would write '1' to " + str(host.root / "proc/sys/vm/swappiness") in r.stdout
    assert _snapshot(host.root) == before and not host.state.exists() and not host.log.exists()


def test_dry_run_needs_no_root(host):
    r = host.run("apply", "--dry-run", AEGIS_ASSUME_UID="1000")
    assert r.returncode == 0, r.stderr


@pytest.mark.parametrize("mode", ["apply", "revert"])
def test_non_root_apply_and_revert_are_refused_with_one_line(host, mode):
    before = _snapshot(host.root)
    r = host.run(mode, "--cores", "2-3", AEGIS_ASSUME_UID="1000")
    assert r.returncode == 2
    assert r.stderr.count("\n") == 1 and "needs root" in r.stderr and r.stdout == ""
    assert _snapshot(host.root) == before


def test_real_uid_is_checked_when_not_overridden(host):
    env = {k: v for k, v in host.env.items() if k != "AEGIS_ASSUME_UID"}
    r = subprocess.run(["bash", str(SCRIPT), "apply", "--dry-run"], capture_output=True, text=True, env=env,
                       timeout=30)
    assert r.returncode == 0  # dry run never needs root
    r = subprocess.run(["bash", str(SCRIPT), "apply"], capture_output=True, text=True, env=env, timeout=30)
    assert (r.returncode == 2) == (os.geteuid() != 0)


def test_apply_changes_nothing_it_cannot_first_record_for_revert(host):
    blocker = host.root.parent / "not-a-dir"
    blocker.write_text("")
    before = _snapshot(host.root)
    r = host.run("apply", "--cores", "2-3", AEGIS_TUNE_STATE=str(blocker / "tune.state"))
    assert r.returncode == 1 and "FAILED to save the previous value" in r.stdout
    assert _snapshot(host.root) == before and not host.log.exists()


def _make_immutable(path: Path) -> bool:
    if shutil.which("chattr") is None:
        return False
    return subprocess.run(["chattr", "+i", str(path)], capture_output=True, timeout=10).returncode == 0


def test_an_irq_the_kernel_refuses_to_move_is_noted_not_fatal_and_not_saved(host):
    p = host.root / "proc/irq/24/smp_affinity_list"
    if not _make_immutable(p):
        pytest.skip("cannot make a file unwritable here (needs root and chattr on ext4/xfs)")
    try:
        r = host.run("apply", "--cores", "2-3")
        assert r.returncode == 0, r.stdout
        assert "kernel refused '0-1' for " + str(p) in r.stdout
        assert _read(host.root, "proc/irq/25/smp_affinity_list") == "0-1"
        assert str(p) not in host.state.read_text()
        assert host.run("revert").returncode == 0
        assert _read(host.root, "proc/irq/25/smp_affinity_list") == "0-3"
    finally:
        subprocess.run(["chattr", "-i", str(p)], capture_output=True, timeout=10)


def test_a_refused_write_of_another_item_fails_apply_and_is_not_saved(host):
    p = host.root / "proc/sys/vm/swappiness"
    if not _make_immutable(p):
        pytest.skip("cannot make a file unwritable here (needs root and chattr on ext4/xfs)")
    try:
        r = host.run("apply", "--cores", "2-3")
        assert r.returncode == 1 and "FAILED to write '1' to " + str(p) in r.stdout
        assert str(p) not in host.state.read_text()
    finally:
        subprocess.run(["chattr", "-i", str(p)], capture_output=True, timeout=10)


# --- revert -----------------------------------------------------------------------------------------------------
def test_revert_restores_every_file_exactly(host):
    before = _snapshot(host.root)
    assert host.run("apply", "--cores", "2-3").returncode == 0
    assert _snapshot(host.root) != before
    r = host.run("revert")
    assert r.returncode == 0, r.stdout
    after = _snapshot(host.root)
    thp = ("sys/kernel/mm/transparent_hugepage/enabled", "sys/kernel/mm/transparent_hugepage/defrag")
    # the kernel renders THP files as "always [madvise] never": what can be restored is the selected mode
    for rel in thp:
        assert after.pop(rel).strip() == re.search(r"\[(\w+)\]", before.pop(rel)).group(1)
    assert after == before
    assert not host.state.exists()
    assert host.log.read_text() == "stop irqbalance\nstart irqbalance\n"


def test_revert_after_two_applies_restores_the_original_values(host):
    host.run("apply", "--cores", "2-3")
    _w(host.root, "proc/sys/vm/swappiness", "30")  # drifted after the first apply
    host.run("apply", "--cores", "2-3")
    host.run("revert")
    assert _read(host.root, "proc/sys/vm/swappiness") == "60"


def test_dry_run_revert_keeps_state_and_files(host):
    host.run("apply", "--cores", "2-3")
    applied = _snapshot(host.root)
    r = host.run("revert", "--dry-run")
    assert r.returncode == 0 and "would write '60'" in r.stdout
    assert _snapshot(host.root) == applied and host.state.exists()


def test_revert_without_state_is_a_no_op(host):
    before = _snapshot(host.root)
    r = host.run("revert")
    assert r.returncode == 0 and "nothing to revert" in r.stdout
    assert _snapshot(host.root) == before


# --- arguments ---------------------------------------------------------------------------------------------------
def test_help_lists_modes_and_options(host):
    r = host.run("--help")
    assert r.returncode == 0
    for word in ("check", "apply", "revert", "--dry-run", "--cores", "AEGIS_SYSROOT"):
        assert word in r.stdout


@pytest.mark.parametrize("args", [["--cores", "x-1"], ["--cores", "7"], ["--cores"], ["bogus"], ["--cores", "3-1"]])
def test_bad_arguments_are_one_line_errors_with_exit_2(host, args):
    r = host.run(*args)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and r.stdout == ""


def test_cores_equals_syntax_is_accepted(host):
    assert "engine cores=2-3" in host.run("--cores=2,3").stdout


def test_service_is_not_touched_under_a_fake_root_without_a_stand_in(host):
    env = dict(host.env)
    del env["AEGIS_SYSTEMCTL"]
    r = subprocess.run(["bash", str(SCRIPT), "apply", "--cores", "2-3"], capture_output=True, text=True, env=env,
                       timeout=30)
    assert "FAILED to stop irqbalance: no service manager" in r.stdout and r.returncode == 1


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck not installed")
def test_script_is_shellcheck_clean():
    r = subprocess.run(["shellcheck", str(SCRIPT)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout
