//! Test support for the token layer's unit tests: a throwaway SoftHSM2 token per test
//! process (nextest runs one process per test), made like tests/common does.

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use secrecy::SecretString;

use super::provision::{self, TokenInit};
use super::{Hsm, HsmConfig};

const LABEL: &str = "smimegate-unit";

struct UnitToken {
    _dir: tempfile::TempDir,
    hsm: Hsm,
}

/// The module under test: `SMIMEGATE_TEST_PKCS11_MODULE`, else Debian's SoftHSM2.
fn module() -> PathBuf {
    std::env::var_os("SMIMEGATE_TEST_PKCS11_MODULE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/lib/softhsm/libsofthsm2.so"))
}

/// This process's token, logged in, with a pool of four sessions.
pub(crate) fn hsm() -> &'static Hsm {
    static TOKEN: OnceLock<UnitToken> = OnceLock::new();
    &TOKEN
        .get_or_init(|| {
            let dir = tempfile::tempdir().expect("temp dir");
            let token_dir = dir.path().join("tokens");
            std::fs::create_dir(&token_dir).expect("token dir");
            let conf = dir.path().join("softhsm2.conf");
            std::fs::write(&conf, provision::softhsm2_conf_text(&token_dir))
                .expect("softhsm2.conf");
            // SAFETY: runs once, before this process loads the module; no other test
            // thread touches the environment.
            #[allow(unsafe_code)]
            unsafe {
                provision::export_softhsm2_conf(&conf)
            };
            let pin = format!("unit-{}", std::process::id());
            let so_pin = SecretString::from(format!("so-{}", std::process::id()));
            let outcome =
                provision::init_token(&module(), LABEL, &so_pin, &SecretString::from(pin.clone()))
                    .expect("initialise unit-test token");
            assert_eq!(outcome, TokenInit::Created);
            let hsm = Hsm::open(HsmConfig {
                module: module(),
                token_label: LABEL.into(),
                pin: SecretString::from(pin),
                max_sessions: 4,
                operation_timeout: Duration::from_secs(30),
                acquire_timeout: Duration::from_secs(30),
            })
            .expect("open unit-test token");
            UnitToken { _dir: dir, hsm }
        })
        .hsm
}
