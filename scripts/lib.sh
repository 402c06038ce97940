# Shared helpers of scripts/up and scripts/test (sourced, not run).

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

ensure_cargo() {
    command -v cargo >/dev/null 2>&1 || die "cargo is not installed: install the Rust toolchain from https://rustup.rs and run again"
}

# nats-server: installed from Debian's packages when missing and we are root;
# otherwise say what to install.
ensure_nats_server() {
    command -v nats-server >/dev/null 2>&1 && return 0
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        say "installing nats-server (apt-get install -y nats-server)"
        DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nats-server >/dev/null || die "apt-get could not install nats-server"
        command -v nats-server >/dev/null 2>&1 || export PATH="$PATH:/usr/sbin"
    else
        die "nats-server is not installed. Install it (Debian/Ubuntu: sudo apt-get install nats-server; elsewhere: https://github.com/nats-io/nats-server/releases) and run again"
    fi
}

# Whether something accepts TCP connections on host:port.
reachable() {
    (exec 3<>"/dev/tcp/$1/$2") >/dev/null 2>&1
}

# Waits up to $3 seconds for host:port to accept connections.
wait_for_port() {
    local host=$1 port=$2 secs=${3:-30}
    for _ in $(seq 1 $((secs * 10))); do
        reachable "$host" "$port" && return 0
        sleep 0.1
    done
    return 1
}
