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
# of tests/saml with xmlsec1) and PostgreSQL.
TEST_PACKAGES=(gpgsm postgresql postgresql-client postfix python3 python3-pysaml2 xmlsec1)
