#!/usr/bin/env bash
# Check, apply or revert the host settings that matter for AEGIS's busy-polling, pinned engine cores.
#
# Every path is read under $AEGIS_SYSROOT (default: the real root), so the script can be exercised against a
# fake sysfs/procfs tree. sysctls are read and written as files under /proc/sys (never the sysctl binary), so the
# fake tree covers them too. Changes made by `apply` are runtime only (lost at reboot); their previous values go
# to a state file that `revert` replays.
set -u
shopt -s nullglob

PROG=${0##*/}
ROOT=${AEGIS_SYSROOT:-}
STATE_FILE=${AEGIS_TUNE_STATE:-$ROOT/var/lib/aegis/tune_host.state}
CSTATE_MAX_LATENCY_US=${AEGIS_CSTATE_MAX_LATENCY_US:-0}   # idle states slower to exit than this get disabled
SWAPPINESS_MAX=10
SWAPPINESS_SET=1
BUSY_POLL_US=50
# Service control is only ever real on the real root: a fake tree gets a stand-in via AEGIS_SYSTEMCTL or none.
if [[ -n ${AEGIS_SYSTEMCTL:-} ]]; then
    SYSTEMCTL=$AEGIS_SYSTEMCTL
elif [[ -z $ROOT ]] && command -v systemctl >/dev/null 2>&1; then
    SYSTEMCTL=systemctl
else
    SYSTEMCTL=
fi

MODE=check
DRY_RUN=0
CORES_ARG=
ENGINE_CPUS=()        # engine cores (from --cores)
ONLINE_CPUS=()
HOUSEKEEPING_CPUS=()  # online CPUs that are not engine cores: IRQs, kernel threads, everything else
TARGET_CPUS=()        # CPUs whose per-CPU knobs we tune: engine cores, or every online CPU without --cores
declare -A IS_ENGINE=()
N_OK=0 N_CHANGE=0 N_REBOOT=0 N_ADVICE=0 N_FAILED=0
STATE_ADDED=0
SOFT_FAIL=0

usage() {
    cat <<EOF
Usage: $PROG [check|apply|revert] [--dry-run] [--cores LIST] [--help]

Low-latency host tuning for the AEGIS engine.

Modes:
  check    (default) read-only report, one line per item: OK / needs change / needs reboot / advice / n/a.
           Exit status 0 when nothing needs a change or a reboot, 1 otherwise.
  apply    change what 'check' reports as 'needs change' (runtime only, lost at reboot); the previous values
           are saved to the state file first. Needs root.
  revert   restore the values saved by 'apply', newest first, then remove the state file. Needs root.

Options:
  --cores LIST  engine cores, kernel cpu-list syntax (e.g. 2-3 or 1,3). Per-CPU knobs (governor, C-states,
                frequency) are then tuned on these cores only, IRQs are moved off them, and the kernel command
                line is checked for isolating them. Without it, per-CPU knobs apply to every online CPU and
                the core-specific items are skipped.
  --dry-run     print what apply/revert would write, change nothing (no root needed).
  -h, --help    this text.

Items: governor, C-states, frequency pinning, turbo, transparent huge pages, vm.swappiness, irqbalance,
IRQ affinity, kernel command line (isolcpus/nohz_full/rcu_nocbs), RT throttling, NIC busy polling, timer slack.

Environment:
  AEGIS_SYSROOT       prefix for every /sys, /proc and state path (default: empty = the real root)
  AEGIS_TUNE_STATE    state file (default: \$AEGIS_SYSROOT/var/lib/aegis/tune_host.state)
  AEGIS_SYSTEMCTL     service manager command (default: systemctl on the real root, none under a fake root)
  AEGIS_CSTATE_MAX_LATENCY_US  disable idle states with a longer exit latency (default 0: all but polling)
EOF
}

die_usage() {
    echo "$PROG: error: $1" >&2
    exit 2
}

# --- small helpers -------------------------------------------------------------------------------------------
read_first() {  # print the first line of a file; fail if it is not readable
    local line
    [[ -r $1 ]] || return 1
    IFS= read -r line <"$1" || [[ -n $line ]] || return 1
    printf '%s\n' "$line"
}

is_int() {
    [[ $1 =~ ^-?[0-9]+$ ]]
}

expand_cpulist() {  # "0-2,5" -> "0 1 2 5"; fails on anything else
    local list=$1 part a b i
    local -a parts out=()
    [[ $list =~ ^[0-9]+(-[0-9]+)?(,[0-9]+(-[0-9]+)?)*$ ]] || return 1
    IFS=, read -ra parts <<<"$list"
    for part in "${parts[@]}"; do
        if [[ $part == *-* ]]; then
            a=$((10#${part%-*}))
            b=$((10#${part#*-}))
            ((a <= b)) || return 1
            for ((i = a; i <= b; i++)); do out+=("$i"); done
        else
            out+=("$((10#$part))")
        fi
    done
    echo "${out[*]}"
}

compress_cpulist() {  # "0 1 2 5" (ascending) -> "0-2,5"
    local c start=-1 prev=-1 ranges=
    for c in $1 END; do
        if [[ $c != END ]] && ((prev >= 0 && c == prev + 1)); then
            prev=$c
            continue
        fi
        if ((start >= 0)); then
            if ((start == prev)); then ranges="$ranges,$start"; else ranges="$ranges,$start-$prev"; fi
        fi
        start=$c
        prev=$c
    done
    echo "${ranges#,}"
}

mask_to_cpus() {  # hex cpumask as in /proc/irq/default_smp_affinity ("f", "ff,ffffffff") -> "0 1 2 3 ..."
    local hex=${1//,/} n i d bit
    local -a out=()
    [[ $hex =~ ^[0-9a-fA-F]+$ ]] || return 1
    n=${#hex}
    for ((i = 0; i < n; i++)); do
        d=$((16#${hex:n-1-i:1}))
        for bit in 0 1 2 3; do
            if (((d >> bit) & 1)); then out+=("$((i * 4 + bit))"); fi
        done
    done
    echo "${out[*]}"
}

cpus_to_mask() {  # "0 2 3" -> "d"; 32-bit groups separated by commas, highest first
    local c max=0 i out
    local -a words=()
    for c in $1; do ((c > max)) && max=$c; done
    for ((i = 0; i <= max / 32; i++)); do words[i]=0; done
    for c in $1; do words[c / 32]=$((words[c / 32] | (1 << (c % 32)))); done
    out=$(printf '%x' "${words[max / 32]}")
    for ((i = max / 32 - 1; i >= 0; i--)); do out+=$(printf ',%08x' "${words[i]}"); done
    echo "$out"
}

touches_engine() {  # true if any CPU of the list argument is an engine core
    local c
    for c in $1; do
        [[ -n ${IS_ENGINE[$c]:-} ]] && return 0
    done
    return 1
}

covers_engine() {  # true if the list argument contains every engine core
    local c
    local -A have=()
    for c in $1; do have[$c]=1; done
    for c in "${ENGINE_CPUS[@]}"; do
        [[ -n ${have[$c]:-} ]] || return 1
    done
    return 0
}

# --- report lines and changes ----------------------------------------------------------------------------------
report() {  # item status detail
    printf '%-16s %-13s %s\n' "$1" "$2" "$3"
    case $2 in
        OK) N_OK=$((N_OK + 1)) ;;
        "needs change") N_CHANGE=$((N_CHANGE + 1)) ;;
        "needs reboot") N_REBOOT=$((N_REBOOT + 1)) ;;
        advice) N_ADVICE=$((N_ADVICE + 1)) ;;
    esac
}

needs_change() {  # item detail; prints the line and succeeds when the caller should make the change
    case $MODE in
        apply)
            N_CHANGE=$((N_CHANGE + 1))
            if ((DRY_RUN)); then report "$1" "would change" "$2"; else report "$1" "changing" "$2"; fi
            return 0
            ;;
        *)
            report "$1" "needs change" "$2"
            return 1
            ;;
    esac
}

state_add() {  # kind key original: remember the first original value of a key only (re-apply keeps it)
    local kind key
    STATE_ADDED=0
    mkdir -p "$(dirname "$STATE_FILE")" || return 1
    if [[ -f $STATE_FILE ]]; then
        while IFS=$'\t' read -r kind key _; do
            [[ $kind == "$1" && $key == "$2" ]] && return 0
        done <"$STATE_FILE"
    fi
    printf '%s\t%s\t%s\n' "$1" "$2" "$3" >>"$STATE_FILE" && STATE_ADDED=1
}

state_drop() {  # kind key: forget an entry (its change did not happen, so revert must not replay it)
    local line kind key
    local -a keep=()
    [[ -f $STATE_FILE ]] || return 0
    while IFS= read -r line; do
        IFS=$'\t' read -r kind key _ <<<"$line"
        [[ $kind == "$1" && $key == "$2" ]] || keep+=("$line")
    done <"$STATE_FILE"
    if ((${#keep[@]})); then printf '%s\n' "${keep[@]}" >"$STATE_FILE"; else rm -f -- "$STATE_FILE"; fi
}

write_value() {  # path value [original-to-save]; SOFT_FAIL=1: a refused write is a note, not a failure
    local path=$1 value=$2 orig=${3-}
    if ((DRY_RUN)); then
        echo "    would write '$value' to $path"
        return 0
    fi
    STATE_ADDED=0
    if [[ $# -ge 3 ]] && ! state_add file "$path" "$orig"; then
        echo "    FAILED to save the previous value of $path to $STATE_FILE: not changed"
        N_FAILED=$((N_FAILED + 1))
        return 1
    fi
    if printf '%s\n' "$value" 2>/dev/null >"$path"; then
        echo "    wrote '$value' to $path"
        return 0
    fi
    ((STATE_ADDED)) && state_drop file "$path"
    if ((SOFT_FAIL)); then
        echo "    kernel refused '$value' for $path (per-CPU or kernel-managed): left as is"
    else
        echo "    FAILED to write '$value' to $path"
        N_FAILED=$((N_FAILED + 1))
    fi
    return 1
}

service_ctl() {  # action name
    if ((DRY_RUN)); then
        echo "    would run: ${SYSTEMCTL:-systemctl} $1 $2"
        return 0
    fi
    if [[ -z $SYSTEMCTL ]]; then
        echo "    FAILED to $1 $2: no service manager (fake root without AEGIS_SYSTEMCTL, or no systemctl)"
        N_FAILED=$((N_FAILED + 1))
        return 1
    fi
    if "$SYSTEMCTL" "$1" "$2" >/dev/null 2>&1; then
        echo "    ran: $SYSTEMCTL $1 $2"
    else
        echo "    FAILED: $SYSTEMCTL $1 $2"
        N_FAILED=$((N_FAILED + 1))
        return 1
    fi
}

# --- items ---------------------------------------------------------------------------------------------------
item_governor() {
    local c f gov avail bad=() files=()
    for c in "${TARGET_CPUS[@]}"; do
        f=$ROOT/sys/devices/system/cpu/cpu$c/cpufreq/scaling_governor
        gov=$(read_first "$f") || continue
        files+=("$f")
        [[ $gov == performance ]] || bad+=("$c:$gov")
    done
    if ((${#files[@]} == 0)); then
        report governor n/a "no cpufreq scaling (VM, or frequency fixed by firmware)"
        return
    fi
    if ((${#bad[@]} == 0)); then
        report governor OK "performance on cpus $(compress_cpulist "${TARGET_CPUS[*]}")"
        return
    fi
    avail=$(read_first "$ROOT/sys/devices/system/cpu/cpu${bad[0]%%:*}/cpufreq/scaling_available_governors") || avail=
    if [[ -n $avail && " $avail " != *" performance "* ]]; then
        report governor advice "cpu:governor ${bad[*]}; driver offers no 'performance' ($avail): set it in firmware"
        return
    fi
    needs_change governor "cpu:governor ${bad[*]} (want performance)" || return
    for c in "${bad[@]}"; do
        f=$ROOT/sys/devices/system/cpu/cpu${c%%:*}/cpufreq/scaling_governor
        write_value "$f" performance "${c#*:}"
    done
}

item_cstates() {
    local c d lat name dis todo=() seen=0 cmdline
    for c in "${TARGET_CPUS[@]}"; do
        for d in "$ROOT/sys/devices/system/cpu/cpu$c/cpuidle"/state[0-9]*; do
            lat=$(read_first "$d/latency") || continue
            dis=$(read_first "$d/disable") || continue
            seen=1
            is_int "$lat" || continue
            if ((lat > CSTATE_MAX_LATENCY_US)) && [[ $dis != 1 ]]; then
                todo+=("$d")
            fi
        done
    done
    cmdline=$(read_first "$ROOT/proc/cmdline") || cmdline=
    if ((!seen)); then
        if [[ " $cmdline " == *" intel_idle.max_cstate="* || " $cmdline " == *" idle=poll "* ]]; then
            report c-states OK "no cpuidle states exposed; limited on the kernel command line"
        else
            report c-states advice "no cpuidle sysfs: limit C-states in firmware, or boot with intel_idle.max_cstate=1 processor.max_cstate=1 (or hold /dev/cpu_dma_latency open with 0)"
        fi
        return
    fi
    if ((${#todo[@]} == 0)); then
        report c-states OK "idle states slower than ${CSTATE_MAX_LATENCY_US} us disabled on cpus $(compress_cpulist "${TARGET_CPUS[*]}")"
        return
    fi
    local names=()
    for d in "${todo[@]}"; do
        name=$(read_first "$d/name") || name=${d##*/}
        c=${d%/cpuidle/*}
        names+=("${c##*/cpu}:$name")
    done
    needs_change c-states "enabled deep idle states ${names[*]} (exit latency > ${CSTATE_MAX_LATENCY_US} us); boot-time alternative: intel_idle.max_cstate=1, or hold /dev/cpu_dma_latency at 0" || return
    for d in "${todo[@]}"; do
        dis=$(read_first "$d/disable")
        write_value "$d/disable" 1 "$dis"
    done
}

item_frequency() {
    local c dir lo hi bad=() seen=0
    for c in "${TARGET_CPUS[@]}"; do
        dir=$ROOT/sys/devices/system/cpu/cpu$c/cpufreq
        lo=$(read_first "$dir/scaling_min_freq") || continue
        hi=$(read_first "$dir/scaling_max_freq") || continue
        seen=1
        if is_int "$lo" && is_int "$hi" && ((lo < hi)); then bad+=("$c:$lo:$hi"); fi
    done
    if ((!seen)); then
        report frequency n/a "no cpufreq scaling limits exposed"
        return
    fi
    if ((${#bad[@]} == 0)); then
        report frequency OK "scaling_min_freq = scaling_max_freq (pinned) on cpus $(compress_cpulist "${TARGET_CPUS[*]}")"
        return
    fi
    needs_change frequency "cpu:min:max kHz ${bad[*]}: frequency ramps add latency after idle; pin min = max" || return
    for c in "${bad[@]}"; do
        IFS=: read -r c lo hi <<<"$c"
        write_value "$ROOT/sys/devices/system/cpu/cpu$c/cpufreq/scaling_min_freq" "$hi" "$lo"
    done
}

item_turbo() {
    local v
    if v=$(read_first "$ROOT/sys/devices/system/cpu/intel_pstate/no_turbo"); then
        if [[ $v == 1 ]]; then
            report turbo advice "turbo off (intel_pstate/no_turbo=1): steady frequency, lower peak speed"
        else
            report turbo advice "turbo on (intel_pstate/no_turbo=0): faster, but frequency varies with heat and busy cores; write 1 for a steadier tail"
        fi
    elif v=$(read_first "$ROOT/sys/devices/system/cpu/cpufreq/boost"); then
        if [[ $v == 0 ]]; then
            report turbo advice "boost off (cpufreq/boost=0): steady frequency, lower peak speed"
        else
            report turbo advice "boost on (cpufreq/boost=1): faster, but frequency varies; write 0 for a steadier tail"
        fi
    else
        report turbo n/a "no turbo/boost control exposed"
    fi
}

thp_mode() {  # "always [madvise] never" -> madvise; a lone word (what was written, on a fake tree) is the mode
    local line=$1
    if [[ $line =~ \[([a-z+]+)\] ]]; then
        echo "${BASH_REMATCH[1]}"
    elif [[ $line =~ ^[a-z+]+$ ]]; then
        echo "$line"
    else
        return 1
    fi
}

item_thp() {
    local base=$ROOT/sys/kernel/mm/transparent_hugepage enabled defrag issues=()
    if ! enabled=$(read_first "$base/enabled") || ! enabled=$(thp_mode "$enabled"); then
        report thp n/a "no transparent huge page control"
        return
    fi
    defrag=$(read_first "$base/defrag") && defrag=$(thp_mode "$defrag") || defrag=
    [[ $enabled == always ]] && issues+=("enabled=always")
    [[ $defrag == always ]] && issues+=("defrag=always")
    if ((${#issues[@]} == 0)); then
        report thp OK "enabled=$enabled${defrag:+ defrag=$defrag} (no khugepaged/compaction stalls on our memory)"
        return
    fi
    needs_change thp "${issues[*]}: page compaction and khugepaged stall the hot path (want madvise or never)" || return
    [[ $enabled == always ]] && write_value "$base/enabled" madvise "$enabled"
    [[ $defrag == always ]] && write_value "$base/defrag" madvise "$defrag"
}

item_swappiness() {
    local f=$ROOT/proc/sys/vm/swappiness v
    if ! v=$(read_first "$f") || ! is_int "$v"; then
        report swappiness n/a "vm.swappiness not present"
        return
    fi
    if ((v <= SWAPPINESS_MAX)); then
        report swappiness OK "vm.swappiness=$v"
        return
    fi
    needs_change swappiness "vm.swappiness=$v (want <= $SWAPPINESS_MAX: a swapped-out page is a millisecond stall)" || return
    write_value "$f" "$SWAPPINESS_SET" "$v"
}

irqbalance_running() {
    local c comm
    for c in "$ROOT"/proc/[0-9]*/comm; do
        comm=$(read_first "$c") || continue
        [[ $comm == irqbalance ]] && return 0
    done
    return 1
}

item_irqbalance() {
    if ! irqbalance_running; then
        report irqbalance OK "not running (IRQ placement stays where we put it)"
        return
    fi
    if ((${#ENGINE_CPUS[@]} == 0)); then
        report irqbalance advice "running: it may move IRQs onto engine cores (pass --cores to check/stop it)"
        return
    fi
    needs_change irqbalance "running: it would move IRQs back onto engine cores (alternative: IRQBALANCE_BANNED_CPULIST=$(compress_cpulist "${ENGINE_CPUS[*]}"))" || return
    if ((!DRY_RUN)); then
        state_add service irqbalance active || {
            echo "    FAILED to save irqbalance state: not stopped"
            N_FAILED=$((N_FAILED + 1))
            return
        }
    fi
    service_ctl stop irqbalance
}

item_irq_affinity() {
    local f v cpus irq bad=() want want_mask dflt
    if ((${#ENGINE_CPUS[@]} == 0)); then
        report irq-affinity skipped "pass --cores LIST to check IRQs against the engine cores"
        return
    fi
    if ((${#HOUSEKEEPING_CPUS[@]} == 0)); then
        report irq-affinity "needs change" "every online CPU is an engine core: leave at least one CPU for IRQs"
        return
    fi
    want=$(compress_cpulist "${HOUSEKEEPING_CPUS[*]}")
    want_mask=$(cpus_to_mask "${HOUSEKEEPING_CPUS[*]}")
    for f in "$ROOT"/proc/irq/[0-9]*/smp_affinity_list; do
        v=$(read_first "$f") || continue
        cpus=$(expand_cpulist "$v") || continue
        if touches_engine "$cpus"; then
            irq=${f%/smp_affinity_list}
            bad+=("${irq##*/}")
        fi
    done
    dflt=
    if v=$(read_first "$ROOT/proc/irq/default_smp_affinity") && cpus=$(mask_to_cpus "$v") && touches_engine "$cpus"; then
        dflt=$v
    fi
    if ((${#bad[@]} == 0)) && [[ -z $dflt ]]; then
        report irq-affinity OK "no IRQ may run on engine cores $(compress_cpulist "${ENGINE_CPUS[*]}")"
        return
    fi
    local what="${#bad[@]} IRQs${bad[0]:+ (${bad[*]:0:8}${bad[8]:+ ...})} allowed on engine cores"
    [[ -n $dflt ]] && what+=", default_smp_affinity=$dflt"
    needs_change irq-affinity "$what (want $want)" || return
    [[ -n $dflt ]] && write_value "$ROOT/proc/irq/default_smp_affinity" "$want_mask" "$dflt"
    for irq in "${bad[@]}"; do
        f=$ROOT/proc/irq/$irq/smp_affinity_list
        v=$(read_first "$f")
        # Some IRQs (per-CPU timers, managed queues) refuse to move: that is reported, not fatal.
        SOFT_FAIL=1 write_value "$f" "$want" "$v"
    done
}

cmdline_param() {  # name cmdline -> value of the last name=... (kernel semantics: last one wins)
    local w val=
    for w in $2; do
        [[ $w == "$1="* ]] && val=${w#*=}
    done
    [[ -n $val ]] || return 1
    echo "$val"
}

item_cmdline() {
    local cmdline p v list missing=() eng
    if ((${#ENGINE_CPUS[@]} == 0)); then
        report cmdline skipped "pass --cores LIST to check isolcpus/nohz_full/rcu_nocbs"
        return
    fi
    if ! cmdline=$(read_first "$ROOT/proc/cmdline"); then
        report cmdline n/a "no /proc/cmdline"
        return
    fi
    eng=$(compress_cpulist "${ENGINE_CPUS[*]}")
    for p in isolcpus nohz_full rcu_nocbs; do
        if v=$(cmdline_param "$p" "$cmdline"); then
            # isolcpus may start with flags ("managed_irq,domain,2-3"): keep the cpu list after them
            while [[ $v =~ ^[a-z_]+,(.*)$ ]]; do v=${BASH_REMATCH[1]}; done
            if list=$(expand_cpulist "$v") && covers_engine "$list"; then
                continue
            fi
        fi
        missing+=("$p=$eng")
    done
    if ((${#missing[@]} == 0)); then
        report cmdline OK "engine cores $eng isolated (isolcpus, nohz_full, rcu_nocbs)"
        return
    fi
    report cmdline "needs reboot" "add ${missing[*]} irqaffinity=$(compress_cpulist "${HOUSEKEEPING_CPUS[*]}") to GRUB_CMDLINE_LINUX, update-grub, reboot"
}

item_rt_throttling() {
    local f=$ROOT/proc/sys/kernel/sched_rt_runtime_us v
    if ! v=$(read_first "$f") || ! is_int "$v"; then
        report rt-throttling n/a "kernel.sched_rt_runtime_us not present"
        return
    fi
    if ((v == -1)); then
        report rt-throttling OK "kernel.sched_rt_runtime_us=-1 (a SCHED_FIFO spinner is never throttled)"
        return
    fi
    needs_change rt-throttling "kernel.sched_rt_runtime_us=$v: a real-time busy-poll thread is paused for the rest of every second (want -1 on isolated cores)" || return
    write_value "$f" -1 "$v"
}

item_busy_poll() {
    local key f v bad=() seen=0
    for key in busy_poll busy_read; do
        f=$ROOT/proc/sys/net/core/$key
        v=$(read_first "$f") || continue
        seen=1
        if ! is_int "$v" || ((v <= 0)); then bad+=("$key:$v"); fi
    done
    if ((!seen)); then
        report busy-poll n/a "net.core.busy_poll/busy_read not present"
        return
    fi
    if ((${#bad[@]} == 0)); then
        report busy-poll OK "net.core.busy_poll=$(read_first "$ROOT/proc/sys/net/core/busy_poll" || echo -) busy_read=$(read_first "$ROOT/proc/sys/net/core/busy_read" || echo -)"
        return
    fi
    needs_change busy-poll "net.core ${bad[*]}: sockets wait for an interrupt instead of polling the NIC queue (want ${BUSY_POLL_US} us)" || return
    for key in "${bad[@]}"; do
        write_value "$ROOT/proc/sys/net/core/${key%%:*}" "$BUSY_POLL_US" "${key#*:}"
    done
}

item_timer_slack() {
    local v
    if v=$(read_first "$ROOT/proc/self/timerslack_ns"); then
        report timer-slack advice "this shell has ${v} ns; the engine sets its own with prctl(PR_SET_TIMERSLACK, 1) per thread (inherited by children), check /proc/<pid>/timerslack_ns"
    else
        report timer-slack advice "the engine should call prctl(PR_SET_TIMERSLACK, 1) per thread: the default 50 us slack delays every timed wake-up"
    fi
}

# --- modes ----------------------------------------------------------------------------------------------------
run_items() {
    item_governor
    item_cstates
    item_frequency
    item_turbo
    item_thp
    item_swappiness
    item_irqbalance
    item_irq_affinity
    item_cmdline
    item_rt_throttling
    item_busy_poll
    item_timer_slack
}

do_revert() {
    local -a lines
    local i kind key val
    if [[ ! -f $STATE_FILE ]]; then
        echo "nothing to revert: no state file $STATE_FILE"
        return 0
    fi
    mapfile -t lines <"$STATE_FILE"
    for ((i = ${#lines[@]} - 1; i >= 0; i--)); do
        IFS=$'\t' read -r kind key val <<<"${lines[i]}"
        case $kind in
            file) write_value "$key" "$val" ;;
            service) [[ $val == active ]] && service_ctl start "$key" ;;
            *) echo "    ignoring unknown state line: ${lines[i]}" ;;
        esac
    done
    if ((DRY_RUN)); then
        echo "dry run: state file $STATE_FILE kept"
    elif ((N_FAILED)); then
        echo "$N_FAILED value(s) could not be restored: state file $STATE_FILE kept"
        return 1
    else
        rm -f -- "$STATE_FILE"
        echo "reverted; removed $STATE_FILE"
    fi
}

main() {
    local arg cpus c v dry=
    while (($#)); do
        arg=$1
        case $arg in
            check | apply | revert) MODE=$arg ;;
            --dry-run) DRY_RUN=1 ;;
            --cores)
                (($# >= 2)) || die_usage "--cores needs a CPU list (e.g. 2-3)"
                CORES_ARG=$2
                shift
                ;;
            --cores=*) CORES_ARG=${arg#--cores=} ;;
            -h | --help)
                usage
                exit 0
                ;;
            *) die_usage "unknown argument '$arg' (try --help)" ;;
        esac
        shift
    done

    [[ $CSTATE_MAX_LATENCY_US =~ ^[0-9]+$ ]] ||
        die_usage "AEGIS_CSTATE_MAX_LATENCY_US must be a whole number of microseconds"

    if [[ $MODE != check ]] && ((!DRY_RUN)); then
        local uid
        uid=${AEGIS_ASSUME_UID:-$(id -u)}
        [[ $uid == 0 ]] || die_usage "$MODE needs root (run it with sudo); 'check' and '--dry-run' do not"
    fi

    if v=$(read_first "$ROOT/sys/devices/system/cpu/online") && cpus=$(expand_cpulist "$v"); then
        read -ra ONLINE_CPUS <<<"$cpus"
    else
        for c in "$ROOT"/sys/devices/system/cpu/cpu[0-9]*; do ONLINE_CPUS+=("${c##*/cpu}"); done
        mapfile -t ONLINE_CPUS < <(printf '%s\n' "${ONLINE_CPUS[@]}" | sort -n)
    fi
    ((${#ONLINE_CPUS[@]})) || die_usage "no CPUs found under $ROOT/sys/devices/system/cpu (wrong AEGIS_SYSROOT?)"

    if [[ -n $CORES_ARG ]]; then
        cpus=$(expand_cpulist "$CORES_ARG") || die_usage "bad --cores list '$CORES_ARG' (want e.g. 2-3 or 1,3)"
        read -ra ENGINE_CPUS <<<"$cpus"
        local -A online=()
        for c in "${ONLINE_CPUS[@]}"; do online[$c]=1; done
        for c in "${ENGINE_CPUS[@]}"; do
            [[ -n ${online[$c]:-} ]] || die_usage "engine core $c is not online (online: $(compress_cpulist "${ONLINE_CPUS[*]}"))"
            IS_ENGINE[$c]=1
        done
        TARGET_CPUS=("${ENGINE_CPUS[@]}")
    else
        TARGET_CPUS=("${ONLINE_CPUS[@]}")
    fi
    for c in "${ONLINE_CPUS[@]}"; do
        [[ -n ${IS_ENGINE[$c]:-} ]] || HOUSEKEEPING_CPUS+=("$c")
    done

    ((DRY_RUN)) && dry=" (dry run)"
    echo "AEGIS host tuning: mode=$MODE$dry root=${ROOT:-/}" \
        "engine cores=$(compress_cpulist "${ENGINE_CPUS[*]}")" "online=$(compress_cpulist "${ONLINE_CPUS[*]}")"

    if [[ $MODE == revert ]]; then
        do_revert
        return
    fi
    run_items
    if [[ $MODE == apply ]]; then
        local verb=changed
        ((DRY_RUN)) && verb="would change"
        echo "summary: $N_OK OK, $N_CHANGE $verb, $N_REBOOT need reboot, $N_ADVICE advice"
    else
        echo "summary: $N_OK OK, $N_CHANGE need change, $N_REBOOT need reboot, $N_ADVICE advice"
    fi
    if [[ $MODE == apply ]]; then
        if ((DRY_RUN)); then
            echo "dry run: nothing was changed"
        else
            echo "runtime changes only (gone after reboot); previous values saved in $STATE_FILE, undo with: $PROG revert"
        fi
        ((N_FAILED == 0)) || {
            echo "$N_FAILED change(s) failed"
            return 1
        }
        return 0
    fi
    ((N_CHANGE + N_REBOOT == 0))
}

main "$@"
