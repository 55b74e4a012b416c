# Shared set-up for scripts/test, scripts/run-example and bench/run: sourced, not run.
# Installs what is missing on a fresh machine and says clearly what failed when it cannot.

set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# Outside the clone so CI runs on the same machine reuse the (slow) wasmtime build.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/wasm-gateway/target}"
export GATEWAY_PLUGIN_DIR="$CARGO_TARGET_DIR/wasm32-wasip2/wasm"
PLUGIN_PACKAGES=(-p gateway-plugin-rewrite -p gateway-plugin-auth -p gateway-plugin-rate-limit -p gateway-plugin-cache -p gateway-example-ip-filter -p gateway-test-misbehave -p gateway-test-kv-probe -p gateway-test-wrong-version -p gateway-test-exchange -p gateway-test-raw-outcome -p gateway-test-outbound-probe -p gateway-test-set-context)

step() { printf '\n==> %s\n' "$*" >&2; }
fail() { printf '\nFAILED: %s\n' "$*" >&2; exit 1; }

# apt-get, as root or through sudo; refreshes the package lists once per run.
apt_install() {
    local sudo=""
    if [ "$(id -u)" -ne 0 ]; then
        command -v sudo >/dev/null || fail "need root or sudo to install: $*"
        sudo="sudo"
    fi
    if [ -z "${APT_UPDATED:-}" ]; then
        $sudo apt-get update -qq || fail "apt-get update failed (is the network to the Debian mirror up?)"
        APT_UPDATED=1
    fi
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$@" >/dev/null \
        || fail "apt-get install $* failed"
}

ensure_toolchain() {
    command -v cargo >/dev/null || fail "cargo not found: install Rust with rustup (https://rustup.rs)"
    command -v rustup >/dev/null || fail "rustup not found: the wasm32-wasip2 target is installed through rustup"
    if ! rustup target list --installed | grep -qx wasm32-wasip2; then
        step "installing the wasm32-wasip2 Rust target"
        rustup target add wasm32-wasip2 || fail "rustup target add wasm32-wasip2 failed"
    fi
    claim_target_dir
}

# Binaries keep the paths of the checkout that built them (the tests find their fixtures through
# CARGO_MANIFEST_DIR, `gateway plugin new` finds the SDK that way), while cargo decides what to
# rebuild by modification times: a second checkout sharing the target folder, with older files,
# would run the first one's binaries. The folder remembers the checkout that last built into it;
# another one marks its own sources as changed, which rebuilds the workspace's crates only.
claim_target_dir() {
    local marker="$CARGO_TARGET_DIR/.checkout" previous=""
    [ -f "$marker" ] && previous="$(cat "$marker")"
    # A folder with builds but no record was filled by an older version of this script.
    if [ "$previous" != "$REPO_ROOT" ] && [ -n "$(ls -A "$CARGO_TARGET_DIR" 2>/dev/null)" ]; then
        step "the target folder was last built from ${previous:-another checkout}: rebuilding this checkout's crates"
        (cd "$REPO_ROOT" && find . -path ./target -prune -o \( -name '*.rs' -o -name Cargo.toml \) -print0 \
            | xargs -0 touch) || fail "cannot mark this checkout's sources as changed"
    fi
    mkdir -p "$CARGO_TARGET_DIR" && printf '%s\n' "$REPO_ROOT" >"$marker" \
        || fail "cannot write to the target folder $CARGO_TARGET_DIR"
}

ensure_command() {
    local command="$1" package="$2"
    if ! command -v "$command" >/dev/null; then
        step "installing $package (for $command)"
        apt_install "$package"
    fi
}

build_plugins() {
    step "building the filter components (wasm32-wasip2)"
    (cd "$REPO_ROOT" && cargo build --profile wasm --target wasm32-wasip2 "${PLUGIN_PACKAGES[@]}") \
        || fail "building the Wasm plugins failed (see the compiler output above)"
    # The hot-reload tests swap builds of one filter that differ: one file per variant.
    local variant features
    for variant in blue green broken-init; do
        case "$variant" in
            blue) features=() ;;
            *) features=(--features "$variant") ;;
        esac
        (cd "$REPO_ROOT" && cargo build --profile wasm --target wasm32-wasip2 -p gateway-test-stamp "${features[@]}") \
            || fail "building the $variant stamp test filter failed (see the compiler output above)"
        cp "$GATEWAY_PLUGIN_DIR/gateway_test_stamp.wasm" "$GATEWAY_PLUGIN_DIR/stamp-$variant.wasm"
    done
}

# The dashboard test's browser driver (tests/browser): playwright-core, pinned in its
# package-lock.json, driving Debian's chromium (no browser is downloaded). `npm ci` runs only
# when node_modules is missing or was installed from another lock file.
ensure_browser_test_deps() {
    ensure_command chromium chromium
    ensure_command node nodejs
    ensure_command npm npm
    # playwright-core wants Node.js 20 (this machine kind's); Debian 12's own nodejs is 18.
    local node_major
    node_major="$(node -p 'process.versions.node.split(".")[0]')"
    [ "$node_major" -ge 20 ] \
        || fail "the browser test needs Node.js 20 or newer (playwright-core), found $(node --version)"
    local folder="$REPO_ROOT/tests/browser"
    local stamp="$folder/node_modules/.installed-from-lock"
    local lock
    lock="$(sha256sum "$folder/package-lock.json" | cut -d' ' -f1)" \
        || fail "cannot read $folder/package-lock.json"
    if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$lock" ]; then
        step "installing the browser test's node modules (npm ci in tests/browser)"
        npm ci --prefix "$folder" --no-audit --no-fund >/dev/null \
            || fail "npm ci --prefix tests/browser failed (is the npm registry reachable?)"
        printf '%s\n' "$lock" >"$stamp"
    fi
}
