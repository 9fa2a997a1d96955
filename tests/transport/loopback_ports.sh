# Sourced by the transport test fixtures: picks loopback ports to listen on.

# A loopback TCP port nobody listens on now, on 127.0.0.1 or ::1, and not
# already chosen in "$run/ports" (bash's /dev/tcp makes the probe without
# other tools).
free_port() {
    local port=$1
    while :; do
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null &&
            ! (exec 3<>"/dev/tcp/::1/$port") 2>/dev/null &&
            ! grep -q "=$port\$" "$run/ports" 2>/dev/null; then
            echo "$port"
            return
        fi
        port=$((port + 1))
    done
}
