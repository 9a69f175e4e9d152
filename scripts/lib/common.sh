# Shared helpers for scripts/: installing Debian packages that are missing.
# Sourced, not run.

# ensure_packages PKG...: installs the Debian packages that are not installed yet.
ensure_packages() {
    local missing=()
    local pkg
    for pkg in "$@"; do
        if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
            missing+=("$pkg")
        fi
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    echo "==> installing Debian packages: ${missing[*]}"
    local sudo=""
    if [ "$(id -u)" -ne 0 ]; then
        sudo="sudo"
    fi
    # Postfix is installed for the end-to-end test only: no system instance is set up.
    if printf '%s\n' "${missing[@]}" | grep -qx postfix; then
        echo "postfix postfix/main_mailer_type select No configuration" | $sudo debconf-set-selections
    fi
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# Packages the gateway needs to build and run.
# libxml2-dev, libxmlsec1-dev and libclang-dev build samael (SAML single sign-on, xmlsec).
RUNTIME_PACKAGES=(build-essential pkg-config libssl-dev libxml2-dev libxmlsec1-dev libclang-dev softhsm2 opensc openssl ca-certificates)
# Packages the test suite needs on top: interop peers (gpgsm, postfix, the pysaml2 IdP
# of tests/saml with xmlsec1) and PostgreSQL; the console's browser tests (headless
# Chromium through chromedriver, certutil for the NSS trust store it reads) and
# python3-venv for schemathesis (ensure_schemathesis).
TEST_PACKAGES=(gpgsm postgresql postgresql-client postfix python3 python3-pysaml2 xmlsec1
    chromium chromium-driver libnss3-tools python3-venv)

# The schemathesis release tests/console/schema.rs runs (from PyPI; works on the
# Python 3.11 of Debian 12).
SCHEMATHESIS_VERSION=4.32.5

# ensure_schemathesis: installs schemathesis into target/venv-schemathesis with pip
# when it is missing or another version (run from the repository's root).
ensure_schemathesis() {
    local venv=target/venv-schemathesis
    if [ -x "$venv/bin/schemathesis" ] \
        && "$venv/bin/schemathesis" --version 2>/dev/null | grep -q "version $SCHEMATHESIS_VERSION\$"; then
        return 0
    fi
    echo "==> installing schemathesis $SCHEMATHESIS_VERSION into $venv"
    rm -rf "$venv"
    /usr/bin/python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION"
}

# start_test_postgres: exports TEST_DATABASE_URL for a PostgreSQL the scripts may create
# databases on: TEST_DATABASE_URL if set; else a server on 127.0.0.1:5432 (CI has one);
# else a throwaway cluster started here (stop it with stop_throwaway_postgres).
pg_throwaway=""
start_test_postgres() {
    [ -n "${TEST_DATABASE_URL:-}" ] && return 0
    if pg_isready -q -h 127.0.0.1 -p 5432 && psql -q -h 127.0.0.1 -U postgres -d test -c 'select 1' >/dev/null 2>&1; then
        export TEST_DATABASE_URL=postgres://postgres@127.0.0.1:5432/test
        return 0
    fi
    pg_bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
    pg_throwaway=$(mktemp -d /tmp/smimegate-pg.XXXXXX)
    chown postgres "$pg_throwaway"
    local port=54329
    echo "==> starting a throwaway PostgreSQL on 127.0.0.1:$port"
    runuser -u postgres -- "$pg_bin/initdb" -D "$pg_throwaway/data" -A trust -U postgres >/dev/null
    runuser -u postgres -- "$pg_bin/pg_ctl" -D "$pg_throwaway/data" -l "$pg_throwaway/log" -w \
        -o "-p $port -k $pg_throwaway -c listen_addresses=127.0.0.1" start >/dev/null
    export TEST_DATABASE_URL=postgres://postgres@127.0.0.1:$port/postgres
}

# stop_throwaway_postgres: stops and removes the cluster start_test_postgres started.
stop_throwaway_postgres() {
    if [ -n "$pg_throwaway" ]; then
        runuser -u postgres -- "$pg_bin/pg_ctl" -D "$pg_throwaway/data" -m fast stop >/dev/null 2>&1 || true
        rm -rf "$pg_throwaway"
        pg_throwaway=""
    fi
}

# The cargo-deb release scripts/package builds the Debian package with (from crates.io;
# `cargo install` compiles it, a few minutes on 2 cores, once per machine).
CARGO_DEB_VERSION=3.8.0
# Debian packages scripts/package and its test need beside the build ones:
# dpkg-shlibdeps (dpkg-dev) for the package's library dependencies; systemd-analyze,
# systemd-sysusers and systemd-tmpfiles (systemd) to check the unit and the scripts.
PACKAGE_PACKAGES=(dpkg-dev systemd)

# ensure_cargo_deb: installs cargo-deb $CARGO_DEB_VERSION when it is missing or another
# version.
ensure_cargo_deb() {
    if cargo deb --version 2>/dev/null | grep -q " $CARGO_DEB_VERSION\$"; then
        return 0
    fi
    echo "==> installing cargo-deb $CARGO_DEB_VERSION (cargo install)"
    local started=$SECONDS
    cargo install cargo-deb --version "=$CARGO_DEB_VERSION" --locked --quiet
    echo "==> cargo-deb installed in $((SECONDS - started)) s"
}
