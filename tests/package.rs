//! The Debian package and its systemd unit (issue 12 item 5): `scripts/package` packages
//! the debug binary this test run built (no release build in the suite); the package is
//! read with dpkg-deb, unpacked, its user and directories made by the real
//! systemd-sysusers / systemd-tmpfiles inside the unpacked tree, its unit checked by
//! `systemd-analyze verify` and scored by `systemd-analyze security --offline=true`.
//! Also the layout it installs: the configuration outside the data directory
//! (`--config`).

mod common;

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::run_ok;

/// The exposure `systemd-analyze security` may give the unit at most.
const MAX_EXPOSURE: f64 = 2.5;
const UNIT: &str = "usr/lib/systemd/system/smimegate.service";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn output(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?} (./scripts/test installs it): {e}"))
}

/// A line for the test run's output even when the test passes (written to stderr
/// directly: the harness captures only `println!`/`eprintln!`).
fn report(line: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "tests/package.rs: {line}");
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Runs and insists on success; returns stdout.
fn ok(cmd: &mut Command) -> String {
    let out = output(cmd);
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        text(&out.stderr),
        text(&out.stdout)
    );
    text(&out.stdout)
}

/// Builds the package into `dir` with scripts/package from the debug binary cargo
/// built for this test run (copied to where cargo-deb looks for a release binary, in a
/// target directory of the test's own: cargo-deb strips what it packages, and the
/// workspace's target/ is left alone); the package's path.
fn build_package(dir: &Path) -> PathBuf {
    let target = dir.join("target");
    std::fs::create_dir_all(target.join("release")).expect("target dir");
    std::fs::copy(
        env!("CARGO_BIN_EXE_smimegate"),
        target.join("release/smimegate"),
    )
    .expect("copy the binary");
    ok(Command::new(repo().join("scripts/package"))
        .args(["--no-build", "--output"])
        .arg(dir)
        .env("CARGO_TARGET_DIR", &target)
        .current_dir(repo()));
    let debs: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("package dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "deb"))
        .collect();
    assert_eq!(debs.len(), 1, "{debs:?}");
    let deb = debs[0].clone();
    let size = std::fs::metadata(&deb).expect("deb").len();
    report(&format!(
        "package: {} ({:.1} MB, the debug binary stripped)",
        deb.display(),
        size as f64 / 1e6
    ));
    deb
}

/// One field of the control file (continuation lines joined).
fn field(control: &str, name: &str) -> String {
    let prefix = format!("{name}:");
    let mut lines = control
        .lines()
        .skip_while(|l| !l.trim_start().starts_with(&prefix));
    let first = lines
        .next()
        .unwrap_or_else(|| panic!("no {name} in:\n{control}"));
    let mut value = first.trim_start()[prefix.len()..].trim().to_string();
    for more in lines.take_while(|l| l.starts_with("  ")) {
        value.push(' ');
        value.push_str(more.trim());
    }
    value
}

/// `(mode, owner, path)` of each `dpkg-deb --contents` line.
fn contents(deb: &Path) -> Vec<(String, String, String)> {
    ok(Command::new("dpkg-deb").arg("--contents").arg(deb))
        .lines()
        .map(|line| {
            let cols: Vec<&str> = line.split_whitespace().collect();
            assert!(cols.len() >= 6, "{line}");
            let path = cols[5].trim_start_matches('.').to_string();
            (cols[0].to_string(), cols[1].to_string(), path)
        })
        .collect()
}

/// The numeric id of `name` in an `/etc/passwd` or `/etc/group` file.
fn id_in(file: &Path, name: &str) -> u32 {
    let text = std::fs::read_to_string(file).expect("passwd/group");
    text.lines()
        .find_map(|l| {
            let cols: Vec<&str> = l.split(':').collect();
            (cols[0] == name).then(|| cols[2].parse().expect("id"))
        })
        .unwrap_or_else(|| panic!("no {name} in {}:\n{text}", file.display()))
}

#[test]
fn the_debian_package_installs_binary_unit_conffile_user_and_data_directory() {
    let dir = tempfile::tempdir().expect("temp dir");
    let deb = build_package(dir.path());

    // Control data: dependencies and the conffile.
    let info = ok(Command::new("dpkg-deb").arg("--info").arg(&deb));
    assert_eq!(field(&info, "Package"), "smimegate");
    let depends = field(&info, "Depends");
    // The binary's own libraries, found by dpkg-shlibdeps ($auto): libc and xmlsec (SAML).
    assert!(depends.contains("libc6"), "{depends}");
    assert!(depends.contains("libxmlsec1"), "{depends}");
    assert!(
        depends.contains("systemd | systemd-standalone-sysusers"),
        "{depends}"
    );
    assert!(
        depends.contains("systemd | systemd-standalone-tmpfiles"),
        "{depends}"
    );
    assert!(!depends.contains("softhsm2"), "{depends}");
    assert_eq!(field(&info, "Recommends"), "softhsm2");
    let control = dir.path().join("control");
    ok(Command::new("dpkg-deb")
        .arg("--control")
        .arg(&deb)
        .arg(&control));
    let conffiles = std::fs::read_to_string(control.join("conffiles")).expect("conffiles");
    assert_eq!(conffiles.trim(), "/etc/smimegate/smimegate.toml");
    let postinst = std::fs::read_to_string(control.join("postinst")).expect("postinst");
    ok(Command::new("sh").arg("-n").arg(control.join("postinst")));
    let sysusers = postinst
        .find("systemd-sysusers")
        .unwrap_or_else(|| panic!("postinst makes no user:\n{postinst}"));
    let tmpfiles = postinst
        .find("systemd-tmpfiles")
        .unwrap_or_else(|| panic!("postinst makes no directory:\n{postinst}"));
    assert!(
        sysusers < tmpfiles,
        "the user must exist first:\n{postinst}"
    );
    // No key, token or database at install time: that is the operator's `init`.
    for script in ["preinst", "postinst", "prerm", "postrm"] {
        if let Ok(body) = std::fs::read_to_string(control.join(script)) {
            ok(Command::new("sh").arg("-n").arg(control.join(script)));
            // The commands, comments left out: none runs the gateway's binary.
            for line in body.lines().filter(|l| !l.trim_start().starts_with('#')) {
                assert!(
                    !line.contains("/usr/bin/smimegate") && !line.contains("smimegate "),
                    "{script} runs smimegate: {line}"
                );
            }
            // Not enabled or started before `init`.
            assert!(
                !body.contains("deb-systemd-invoke start"),
                "{script}:\n{body}"
            );
        }
    }

    // Files.
    let files = contents(&deb);
    let entry = |path: &str| {
        files
            .iter()
            .find(|(_, _, p)| p == path)
            .unwrap_or_else(|| panic!("{path} not in the package: {files:#?}"))
    };
    assert_eq!(entry("/usr/bin/smimegate").0, "-rwxr-xr-x");
    assert_eq!(entry(&format!("/{UNIT}")).0, "-rw-r--r--");
    assert_eq!(entry("/etc/smimegate/smimegate.toml").0, "-rw-r-----");
    entry("/usr/lib/sysusers.d/smimegate.conf");
    entry("/usr/lib/tmpfiles.d/smimegate.conf");
    entry("/usr/share/doc/smimegate/install.md");
    entry("/usr/share/doc/smimegate/copyright");
    for (_, owner, path) in &files {
        assert_eq!(owner, "0/0", "{path}");
    }
    // Nothing secret or machine-made is shipped.
    for (_, _, path) in &files {
        assert!(
            !path.contains(".pin") && !path.contains("tokens") && !path.ends_with(".db"),
            "{path}"
        );
    }

    // Unpacked: what the maintainer scripts do, done by the same programs on the tree.
    let root = dir.path().join("root");
    ok(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&root));
    assert_eq!(
        std::fs::read_to_string(root.join("etc/smimegate/smimegate.toml")).expect("conffile"),
        smimegate::config::TEMPLATE
    );
    let version = ok(Command::new(root.join("usr/bin/smimegate")).arg("--version"));
    assert!(
        version.starts_with(&format!("smimegate {}", env!("CARGO_PKG_VERSION"))),
        "{version}"
    );
    ok(Command::new("systemd-sysusers")
        .arg(format!("--root={}", root.display()))
        .arg("smimegate.conf"));
    let passwd = std::fs::read_to_string(root.join("etc/passwd")).expect("passwd");
    let user = passwd
        .lines()
        .find(|l| l.starts_with("smimegate:"))
        .unwrap_or_else(|| panic!("no smimegate user:\n{passwd}"));
    let cols: Vec<&str> = user.split(':').collect();
    let uid: u32 = cols[2].parse().expect("uid");
    assert!(uid > 0 && uid < 1000, "not a system user: {user}");
    assert_eq!(cols[5], "/var/lib/smimegate", "{user}");
    assert_eq!(cols[6], "/usr/sbin/nologin", "{user}");
    let gid = id_in(&root.join("etc/group"), "smimegate");
    assert_eq!(cols[3].parse::<u32>().expect("gid"), gid, "{user}");

    ok(Command::new("systemd-tmpfiles")
        .arg(format!("--root={}", root.display()))
        .arg("--create")
        .arg("smimegate.conf"));
    let data = std::fs::metadata(root.join("var/lib/smimegate")).expect("data directory");
    assert!(data.is_dir());
    assert_eq!(data.mode() & 0o7777, 0o750);
    assert_eq!((data.uid(), data.gid()), (uid, gid));
    let config = std::fs::metadata(root.join("etc/smimegate/smimegate.toml")).expect("config");
    assert_eq!(config.mode() & 0o7777, 0o640);
    assert_eq!((config.uid(), config.gid()), (0, gid));
    let etc = std::fs::metadata(root.join("etc/smimegate")).expect("config dir");
    assert_eq!(etc.mode() & 0o7777, 0o750);
    assert_eq!((etc.uid(), etc.gid()), (0, gid));

    // The unit: verified with the unpacked binary at the path it names (an overlay on
    // /usr/bin in a private mount namespace; the host's /usr/bin is not touched), and
    // no warning either (an unknown or misspelt directive is only a warning).
    let unit = root.join(UNIT);
    let unit_text = std::fs::read_to_string(&unit).expect("unit");
    assert!(
        unit_text.contains("ExecStart=/usr/bin/smimegate --data-dir /var/lib/smimegate --config /etc/smimegate/smimegate.toml serve"),
        "{unit_text}"
    );
    assert!(!unit_text.contains("\nPrivateDevices="), "{unit_text}");
    let script = format!(
        "set -e; mount --make-rprivate /; \
         mount -t overlay overlay -o lowerdir={}:/usr/bin /usr/bin; \
         test -x /usr/bin/smimegate; \
         systemd-analyze verify {}",
        root.join("usr/bin").display(),
        unit.display()
    );
    let verify = output(Command::new("unshare").args(["--mount", "sh", "-c", &script]));
    assert!(
        verify.status.success() && verify.stderr.is_empty(),
        "systemd-analyze verify: {}{}",
        text(&verify.stderr),
        text(&verify.stdout)
    );
    // The same check fails on a unit with a misspelt directive (the check can fail).
    let broken = dir.path().join("smimegate.service");
    std::fs::write(
        &broken,
        unit_text.replace("ProtectClock=yes", "ProtectClok=yes"),
    )
    .expect("broken unit");
    let script = script.replace(&unit.display().to_string(), &broken.display().to_string());
    let refused = output(Command::new("unshare").args(["--mount", "sh", "-c", &script]));
    assert!(
        text(&refused.stderr).contains("ProtectClok"),
        "{}",
        text(&refused.stderr)
    );

    // The exposure score.
    let security = output(
        Command::new("systemd-analyze")
            .args(["security", "--offline=true", "--no-pager"])
            .arg(&unit),
    );
    let scored = text(&security.stdout);
    let overall = scored
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .unwrap_or_else(|| panic!("no exposure: {scored}{}", text(&security.stderr)));
    report(&format!(
        "systemd-analyze security --offline=true {UNIT}: {}",
        overall.trim()
    ));
    let score: f64 = overall
        .rsplit(": ")
        .next()
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no score in: {overall}"));
    assert!(
        score <= MAX_EXPOSURE && overall.contains(" OK"),
        "exposure {score} above {MAX_EXPOSURE}:\n{scored}"
    );
}

/// The package's layout: the configuration in its own directory, the data directory
/// elsewhere. `init` uses the configuration it finds (and writes none into the data
/// directory), commands find it by `--config` or `SMIMEGATE_CONFIG`, SIGHUP rereads it,
/// `backup create` archives it and `backup restore` leaves it alone when unchanged.
#[test]
fn the_configuration_can_live_outside_the_data_directory() {
    let dir = tempfile::tempdir().expect("temp dir");
    let etc = dir.path().join("etc");
    let data = dir.path().join("var");
    std::fs::create_dir(&etc).expect("etc");
    let config = etc.join("smimegate.toml");
    // The file the package ships, with test ports.
    let (http, inbound, submission, console) = (free_port(), free_port(), free_port(), free_port());
    let shipped = smimegate::config::TEMPLATE
        .replacen("127.0.0.1:8080", &format!("127.0.0.1:{http}"), 1)
        .replacen("127.0.0.1:8443", &format!("127.0.0.1:{console}"), 1)
        .replacen("127.0.0.1:2525", &format!("127.0.0.1:{inbound}"), 1)
        .replacen("127.0.0.1:2587", &format!("127.0.0.1:{submission}"), 1);
    std::fs::write(&config, &shipped).expect("config");
    let bin = env!("CARGO_BIN_EXE_smimegate");
    let cli = |args: &[&str]| {
        let mut cmd = Command::new(bin);
        cmd.arg("--data-dir")
            .arg(&data)
            .arg("--config")
            .arg(&config)
            .args(args)
            .env_remove("SMIMEGATE_HSM_PIN")
            .env_remove("SMIMEGATE_CONFIG")
            .env_remove("RUST_LOG");
        cmd
    };

    // Without --config the data directory has none: the error names both options.
    std::fs::create_dir(&data).expect("data");
    let missing = output(
        Command::new(bin)
            .arg("--data-dir")
            .arg(&data)
            .arg("--config")
            .arg(etc.join("absent.toml"))
            .args(["token", "status"]),
    );
    assert!(!missing.status.success());
    let stderr = text(&missing.stderr);
    assert!(stderr.contains("absent.toml"), "{stderr}");
    assert!(stderr.contains("--config"), "{stderr}");

    let out = ok(&mut cli(&["init"]));
    assert!(out.contains("created SoftHSM2 token"), "{out}");
    assert!(!out.contains("created configuration"), "{out}");
    assert!(!data.join("smimegate.toml").exists());
    assert_eq!(std::fs::read_to_string(&config).expect("config"), shipped);
    assert!(data.join("softhsm2.conf").exists() && data.join("tokens").is_dir());
    assert!(data.join("smimegate.db").exists());
    let again = ok(&mut cli(&["init"]));
    assert!(again.contains("nothing to do"), "{again}");

    // The environment variable stands for the option.
    let status = ok(Command::new(bin)
        .arg("token")
        .arg("status")
        .env("SMIMEGATE_DATA_DIR", &data)
        .env("SMIMEGATE_CONFIG", &config)
        .env_remove("RUST_LOG"));
    assert!(status.contains("smimegate"), "{status}");
    // Without either, the data directory's own file is looked for, and is not there.
    let without = output(
        Command::new(bin)
            .args(["token", "status"])
            .env("SMIMEGATE_DATA_DIR", &data)
            .env_remove("SMIMEGATE_CONFIG"),
    );
    assert!(!without.status.success());
    assert!(
        text(&without.stderr).contains(&data.join("smimegate.toml").display().to_string()),
        "{}",
        text(&without.stderr)
    );

    // serve reads it, and SIGHUP rereads that file.
    let log = dir.path().join("serve.log");
    let child = cli(&["serve"])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log"))
        .spawn()
        .expect("serve");
    let serve = Killed(child);
    wait_for_port(http);
    let edited = shipped.replacen("filter = \"info\"", "filter = \"debug\"", 1);
    assert_ne!(edited, shipped);
    std::fs::write(&config, &edited).expect("edit config");
    ok(Command::new("kill").args(["-HUP", &serve.0.id().to_string()]));
    let until = Instant::now() + Duration::from_secs(10);
    let line = loop {
        let logged = std::fs::read_to_string(&log).expect("log");
        if let Some(line) = logged.lines().find(|l| l.contains("SIGHUP")) {
            break line.to_string();
        }
        assert!(Instant::now() < until, "no SIGHUP line:\n{logged}");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(line.contains("configuration reloaded"), "{line}");
    assert!(line.contains("log.filter = \"debug\""), "{line}");
    drop(serve);

    // backup create archives the --config file; restore keeps it when unchanged.
    let archive = dir.path().join("gw.smgbak");
    ok(cli(&["backup", "create"]).arg(&archive));
    let listed = run_ok(
        "tar",
        &["-xOf", &archive.display().to_string(), "smimegate.toml"],
    );
    assert_eq!(listed, edited);
    let inode = std::fs::metadata(&config).expect("config").ino();
    ok(cli(&["backup", "restore"]).arg(&archive));
    assert_eq!(std::fs::metadata(&config).expect("config").ino(), inode);
    assert!(!data.join("smimegate.toml").exists());
    // A different archived configuration replaces the --config file.
    std::fs::write(&config, &shipped).expect("config back");
    ok(cli(&["backup", "restore"]).arg(&archive));
    assert_eq!(std::fs::read_to_string(&config).expect("config"), edited);
    assert!(!data.join("smimegate.toml").exists());
    let status = ok(&mut cli(&["token", "status"]));
    assert!(status.contains("smimegate"), "{status}");
}

fn free_port() -> u16 {
    let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    probe.local_addr().expect("addr").port()
}

fn wait_for_port(port: u16) {
    let until = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < until, "nothing listens on port {port}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Kills the process when the test ends, passed or not.
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
