# Shared by ci/bench, ci/bench-pair and ci/profile (sourced, not run): waiting for a listener,
# HAProxy's configuration, and the figures every one of them reads the same way.

# wait_port PORT: until something accepts on 127.0.0.1:PORT, for at most 5 s.
wait_port() {
    local i
    for i in $(seq 100); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
        sleep 0.05
    done
    echo "nothing accepts on 127.0.0.1:$1 after 5 s" >&2
    return 1
}

# haproxy_config PORT DEST: HAProxy in tcp mode on 127.0.0.1:PORT to 127.0.0.1:DEST, splicing
# both ways always (splice-auto leaves it to a heuristic that may copy instead), one thread per
# CPU.
haproxy_config() {
    cat <<CFG
global
    maxconn 6000
    maxpipes 1500
    nbthread $(nproc)
defaults
    mode tcp
    option splice-request
    option splice-response
    timeout connect 5s
    timeout client 1h
    timeout server 1h
frontend bench
    bind 127.0.0.1:$1
    default_backend dest
backend dest
    server dest 127.0.0.1:$2
CFG
}

# iperf3 JSON on stdin -> "bits_per_second bytes" received.
iperf_figures() {
    python3 -c 'import json,sys; s=json.load(sys.stdin)["end"]["sum_received"]; print(s["bits_per_second"], s["bytes"])'
}

# proc_ticks PID: user + system CPU ticks of one process.
proc_ticks() {
    sed 's/^.*) //' "/proc/$1/stat" | awk '{print $12 + $13}'
}

# cpu_per_gb TICKS BYTES: CPU seconds per 10^9 bytes forwarded.
cpu_per_gb() {
    awk -v t="$1" -v hz="$(getconf CLK_TCK)" -v b="$2" 'BEGIN { if (b > 0) printf "%.3f", (t / hz) / (b / 1e9); else print "nan" }'
}
