//! Backup and restore (issue 12 item 6): one archive file holding a consistent snapshot
//! of the database and the configuration file, never a key, PIN, token file or
//! password file (keys stay in the token; docs/operations.md, "Backup and restore").
//!
//! # Archive format
//!
//! A POSIX tar file (mode 0600) with exactly these members, in this order:
//!
//! - `manifest.json`: [`Manifest`] (format name and version, backend, creation time,
//!   schema migration level, node name, smimegate version);
//! - `smimegate.toml`: the configuration file as it was;
//! - `database.sqlite` (an SQLite file made by `VACUUM INTO`, online and consistent)
//!   or `database.pgdump` (`pg_dump --format=custom`).
//!
//! Restore reads only these names; any other member, a newer format, or a schema
//! newer than this binary knows is refused before anything is replaced.

use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::{Actor, OpError, Ops, audit, rfc3339};
use crate::config::{CONFIG_FILE, Config, Settings};
use crate::store::{Backend, Store};

/// The `format` of every smimegate backup manifest.
pub const FORMAT: &str = "smimegate-backup";
/// The manifest version this binary writes and reads.
pub const FORMAT_VERSION: u32 = 1;

const MANIFEST: &str = "manifest.json";
const SQLITE_MEMBER: &str = "database.sqlite";
const PGDUMP_MEMBER: &str = "database.pgdump";
/// Manifest and configuration are small; a larger member of those names is refused.
const MAX_SMALL_MEMBER: u64 = 1 << 20;

/// What a backup says about itself.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct Manifest {
    pub format: String,
    pub version: u32,
    pub backend: Backend,
    /// RFC 3339, UTC.
    pub created_at: String,
    /// The newest database migration applied when the snapshot was taken.
    pub schema: i64,
    /// `[gateway].node_name` of the node that made it.
    pub node: String,
    /// The smimegate version that made it.
    pub smimegate: String,
}

/// The result of [`create`] and [`restore`].
#[derive(Debug, Clone, serde::Serialize)]
pub struct BackupSummary {
    pub file: PathBuf,
    pub manifest: Manifest,
    /// Size of the database snapshot in bytes.
    pub database_bytes: u64,
}

fn setup(what: impl std::fmt::Display) -> OpError {
    OpError::Setup(what.to_string())
}

/// A file next to `near`, created new with mode 0600 and removed when dropped unless
/// kept.
struct TempFile {
    path: PathBuf,
    keep: bool,
}

impl TempFile {
    fn new(near: &Path, suffix: &str) -> Result<(TempFile, std::fs::File), OpError> {
        let dir = near
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let name = near
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_else(|| "backup".into());
        let path = dir.join(format!(".{name}.{}.{suffix}", std::process::id()));
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| setup(format!("cannot create {}: {e}", path.display())))?;
        Ok((TempFile { path, keep: false }, file))
    }

    /// A path for a program to create (removed first if a stale one is there).
    fn path_only(near: &Path, suffix: &str) -> Result<TempFile, OpError> {
        let (t, file) = TempFile::new(near, suffix)?;
        drop(file);
        std::fs::remove_file(&t.path)
            .map_err(|e| setup(format!("cannot prepare {}: {e}", t.path.display())))?;
        Ok(t)
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Runs a PostgreSQL client program; its stderr is the error. The password, if any,
/// goes in `PGPASSWORD` (readable only by this user and root), never on the command
/// line, which every local user can see in `ps`.
fn run_pg(program: &str, args: &[&std::ffi::OsStr], password: Option<&str>) -> Result<(), OpError> {
    let mut command = Command::new(program);
    command.args(args);
    if let Some(password) = password {
        command.env("PGPASSWORD", password);
    }
    let out = command.output().map_err(|e| {
        setup(format!(
            "cannot run {program} (install the postgresql-client package): {e}"
        ))
    })?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let stderr = stderr.trim();
        tracing::warn!(program, %stderr, "PostgreSQL client failed");
        return Err(setup(format!("{program} failed: {stderr}")));
    }
    Ok(())
}

/// `url` without the password of its user information, and that password
/// (percent-decoded), so that it can be passed in the environment.
fn split_password(url: &str) -> (String, Option<String>) {
    let Some((scheme, rest)) = url.split_once("://") else {
        return (url.to_string(), None);
    };
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    let Some((userinfo, host)) = authority.rsplit_once('@') else {
        return (url.to_string(), None);
    };
    let Some((user, password)) = userinfo.split_once(':') else {
        return (url.to_string(), None);
    };
    (
        format!("{scheme}://{user}@{host}{path}"),
        Some(percent_decode(password)),
    )
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let (Some(hi), Some(lo)) = (hex(bytes[i + 1]), hex(bytes[i + 2]))
        {
            out.push((hi * 16 + lo) as u8);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The database URL as libpq takes it: sqlx's own query parameters would be refused.
fn libpq_url(url: &str) -> String {
    match url.split_once('?') {
        None => url.to_string(),
        Some((base, query)) => {
            const LIBPQ: &[&str] = &[
                "sslmode",
                "sslrootcert",
                "sslcert",
                "sslkey",
                "application_name",
                "options",
                "host",
                "port",
                "user",
                "password",
                "dbname",
            ];
            let kept: Vec<&str> = query
                .split('&')
                .filter(|kv| LIBPQ.contains(&kv.split('=').next().unwrap_or("")))
                .collect();
            if kept.is_empty() {
                base.to_string()
            } else {
                format!("{base}?{}", kept.join("&"))
            }
        }
    }
}

/// The SQLite file a `sqlite:` URL names (already resolved against the data directory).
fn sqlite_file(url: &str) -> Result<PathBuf, OpError> {
    let rest = url.trim_start_matches("sqlite:").trim_start_matches("//");
    let path = rest.split('?').next().unwrap_or("");
    if path.is_empty() || path.contains(":memory:") {
        return Err(OpError::Invalid(
            "an in-memory database cannot be backed up or restored".into(),
        ));
    }
    Ok(PathBuf::from(path))
}

fn append(
    tar: &mut tar::Builder<std::fs::File>,
    name: &str,
    data: &mut dyn Read,
    len: u64,
) -> Result<(), OpError> {
    let mut header = tar::Header::new_ustar();
    header.set_size(len);
    header.set_mode(0o600);
    header.set_mtime(crate::store::unix_now().max(0) as u64);
    header.set_entry_type(tar::EntryType::Regular);
    header.set_cksum();
    tar.append_data(&mut header, name, data)
        .map_err(|e| setup(format!("cannot write {name} into the archive: {e}")))
}

/// `backup create FILE`: snapshots the database (online: SQLite `VACUUM INTO`,
/// PostgreSQL `pg_dump`) and copies the configuration into one archive, mode 0600.
/// Never a key, PIN, token or password file. Refuses to overwrite an existing file.
#[tracing::instrument(skip_all, fields(file = %file.display()))]
pub async fn create(ctx: &Ops<'_>, actor: &Actor, file: &Path) -> Result<BackupSummary, OpError> {
    if file.as_os_str().is_empty() {
        return Err(OpError::Invalid("the backup file name is empty".into()));
    }
    if file.exists() {
        return Err(OpError::Invalid(format!(
            "{} exists: choose a new file name",
            file.display()
        )));
    }
    let settings = ctx.settings;
    let store = ctx.store;
    let config_path = &settings.config_file;
    let config_text = std::fs::read(config_path)
        .map_err(|e| setup(format!("cannot read {}: {e}", config_path.display())))?;
    let schema = store.schema_level().await?;
    let backend = store.backend();
    let snapshot = TempFile::path_only(file, "db")?;
    match backend {
        Backend::Sqlite => {
            let target = snapshot.path.to_string_lossy().replace('\'', "''");
            sqlx::query(sqlx::AssertSqlSafe(format!("VACUUM INTO '{target}'")))
                .execute(store.pool())
                .await
                .map_err(|e| setup(format!("the SQLite snapshot failed: {e}")))?;
        }
        Backend::Postgres => {
            let (url, password) = split_password(&libpq_url(&settings.database_url()));
            let file_arg = snapshot.path.as_os_str();
            run_pg(
                "pg_dump",
                &[
                    "--format=custom".as_ref(),
                    "--no-owner".as_ref(),
                    "--no-privileges".as_ref(),
                    "--file".as_ref(),
                    file_arg,
                    "--dbname".as_ref(),
                    url.as_ref(),
                ],
                password.as_deref(),
            )?;
        }
    }
    let manifest = Manifest {
        format: FORMAT.into(),
        version: FORMAT_VERSION,
        backend,
        created_at: rfc3339(crate::store::unix_now()),
        schema,
        node: settings.config.gateway.node_name.clone(),
        smimegate: env!("CARGO_PKG_VERSION").into(),
    };
    let manifest_json =
        serde_json::to_vec_pretty(&manifest).map_err(|e| setup(format!("manifest: {e}")))?;
    let (mut archive, out) = TempFile::new(file, "tar")?;
    let mut db = std::fs::File::open(&snapshot.path)
        .map_err(|e| setup(format!("cannot read the snapshot: {e}")))?;
    let database_bytes = db
        .metadata()
        .map_err(|e| setup(format!("cannot read the snapshot: {e}")))?
        .len();
    let member = match backend {
        Backend::Sqlite => SQLITE_MEMBER,
        Backend::Postgres => PGDUMP_MEMBER,
    };
    let mut tar = tar::Builder::new(out);
    append(
        &mut tar,
        MANIFEST,
        &mut manifest_json.as_slice(),
        manifest_json.len() as u64,
    )?;
    append(
        &mut tar,
        CONFIG_FILE,
        &mut config_text.as_slice(),
        config_text.len() as u64,
    )?;
    append(&mut tar, member, &mut db, database_bytes)?;
    let out = tar
        .into_inner()
        .map_err(|e| setup(format!("cannot finish the archive: {e}")))?;
    out.sync_all()
        .map_err(|e| setup(format!("cannot write the archive: {e}")))?;
    std::fs::rename(&archive.path, file)
        .map_err(|e| setup(format!("cannot write {}: {e}", file.display())))?;
    archive.keep = true;
    tracing::info!(schema, ?backend, "backup created");
    audit(
        store,
        actor,
        "backup.create",
        &file.display().to_string(),
        &format!("{backend:?} schema {schema}, {database_bytes} bytes").to_lowercase(),
    )
    .await?;
    Ok(BackupSummary {
        file: file.to_path_buf(),
        manifest,
        database_bytes,
    })
}

/// What [`read_archive`] found.
struct Unpacked {
    manifest: Manifest,
    config_text: Vec<u8>,
    database: TempFile,
    database_bytes: u64,
}

fn read_small(entry: &mut dyn Read, size: u64, name: &str) -> Result<Vec<u8>, OpError> {
    if size > MAX_SMALL_MEMBER {
        return Err(OpError::Invalid(format!(
            "{name} in the archive is too large ({size} bytes)"
        )));
    }
    let mut buf = Vec::with_capacity(size as usize);
    entry
        .take(MAX_SMALL_MEMBER)
        .read_to_end(&mut buf)
        .map_err(|e| OpError::Invalid(format!("cannot read {name} from the archive: {e}")))?;
    Ok(buf)
}

/// Reads and checks an archive; the database goes to a temporary file next to `near`.
fn read_archive(file: &Path, near: &Path) -> Result<Unpacked, OpError> {
    let bad = |why: String| OpError::Invalid(format!("{} is not a backup: {why}", file.display()));
    let input = std::fs::File::open(file)
        .map_err(|e| OpError::Invalid(format!("cannot open {}: {e}", file.display())))?;
    let mut archive = tar::Archive::new(input);
    let mut manifest: Option<Manifest> = None;
    let mut config_text = None;
    let mut database: Option<(TempFile, u64, &str)> = None;
    let entries = archive.entries().map_err(|e| bad(e.to_string()))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| bad(e.to_string()))?;
        let name = entry
            .path()
            .map_err(|e| bad(e.to_string()))?
            .to_string_lossy()
            .to_string();
        let size = entry.size();
        if entry.header().entry_type() != tar::EntryType::Regular {
            return Err(bad(format!("{name} is not a regular file")));
        }
        match name.as_str() {
            MANIFEST if manifest.is_none() => {
                let text = read_small(&mut entry, size, MANIFEST)?;
                let m: Manifest = serde_json::from_slice(&text)
                    .map_err(|e| bad(format!("unreadable manifest: {e}")))?;
                if m.format != FORMAT {
                    return Err(bad(format!("manifest format {:?}", m.format)));
                }
                if m.version > FORMAT_VERSION {
                    return Err(OpError::Invalid(format!(
                        "{} is backup format {}; this smimegate reads up to {FORMAT_VERSION}: restore with a newer smimegate",
                        file.display(),
                        m.version
                    )));
                }
                manifest = Some(m);
            }
            CONFIG_FILE if manifest.is_some() && config_text.is_none() => {
                config_text = Some(read_small(&mut entry, size, CONFIG_FILE)?);
            }
            SQLITE_MEMBER | PGDUMP_MEMBER if config_text.is_some() && database.is_none() => {
                let (t, mut out) = TempFile::new(near, "restore")?;
                let copied = std::io::copy(&mut entry, &mut out)
                    .and_then(|n| out.sync_all().map(|()| n))
                    .map_err(|e| setup(format!("cannot unpack the database: {e}")))?;
                let member = if name == SQLITE_MEMBER {
                    SQLITE_MEMBER
                } else {
                    PGDUMP_MEMBER
                };
                database = Some((t, copied, member));
            }
            other => return Err(bad(format!("unexpected member {other:?}"))),
        }
    }
    let manifest = manifest.ok_or_else(|| bad("no manifest".into()))?;
    let config_text = config_text.ok_or_else(|| bad(format!("no {CONFIG_FILE}")))?;
    let (database, database_bytes, member) =
        database.ok_or_else(|| bad("no database snapshot".into()))?;
    let expected = match manifest.backend {
        Backend::Sqlite => SQLITE_MEMBER,
        Backend::Postgres => PGDUMP_MEMBER,
    };
    if member != expected {
        return Err(bad(format!(
            "a {member} in a {:?} backup",
            manifest.backend
        )));
    }
    Ok(Unpacked {
        manifest,
        config_text,
        database,
        database_bytes,
    })
}

/// `backup restore FILE` into the data directory of `settings`: refuses while a
/// `serve` holds the data directory (the lock is held for the whole restore), refuses
/// an archive of a newer schema than this binary knows or of another database backend
/// than the archived configuration names, checks the token opens, then replaces the
/// database (SQLite: the file, atomically; PostgreSQL: `pg_restore --clean` into the
/// configured database) and the configuration, migrates the restored database to this
/// binary's schema, and audits `backup.restore`.
#[tracing::instrument(skip_all, fields(file = %file.display()))]
pub async fn restore(
    settings: &Settings,
    actor: &Actor,
    file: &Path,
) -> Result<BackupSummary, OpError> {
    let _lock = crate::data_dir::lock_data_dir(&settings.data_dir)
        .map_err(|e| OpError::Invalid(format!("{e:#}")))?;
    let config_path = settings.config_file.clone();
    // Unpacked into the data directory: the configuration's may be read-only
    // (/etc/smimegate in the Debian package).
    let unpacked = read_archive(file, &settings.data_dir.join(CONFIG_FILE))?;
    let manifest = unpacked.manifest.clone();
    let known = Store::known_schema_level(manifest.backend);
    if manifest.schema > known {
        return Err(OpError::Invalid(format!(
            "{} has database schema {}; this smimegate knows up to {known}: restore with the smimegate version that made it ({}) or a newer one",
            file.display(),
            manifest.schema,
            manifest.smimegate
        )));
    }
    let config_text = String::from_utf8(unpacked.config_text.clone())
        .map_err(|_| OpError::Invalid(format!("{CONFIG_FILE} in the archive is not UTF-8")))?;
    let config = Config::parse(&config_text, Path::new(CONFIG_FILE))
        .map_err(|e| OpError::Invalid(format!("{CONFIG_FILE} in the archive: {e}")))?;
    let restored = Settings {
        data_dir: settings.data_dir.clone(),
        config_file: config_path.clone(),
        config,
    };
    let url = restored.database_url();
    let backend = if url.starts_with("sqlite:") {
        Backend::Sqlite
    } else {
        Backend::Postgres
    };
    if backend != manifest.backend {
        return Err(OpError::Invalid(format!(
            "the archive holds a {:?} database but its configuration names a {backend:?} one",
            manifest.backend
        )));
    }
    // The keys are not in the archive: restoring where the token is missing would
    // leave a gateway that verifies but cannot decrypt or sign. Check it opens first.
    let hsm = crate::app::open_hsm(&restored).await.map_err(|e| {
        OpError::Invalid(format!(
            "the token of the restored configuration does not open ({e}): restore the token (SoftHSM: the token directory; a network HSM: its own backup) first"
        ))
    })?;
    drop(hsm);
    // The configuration is replaced only when it differs, and its new file is made
    // before the database is touched: a configuration the restoring user cannot write
    // (root's /etc/smimegate) stops the restore while nothing has changed yet.
    let unchanged = std::fs::read(&config_path).is_ok_and(|c| c == config_text.as_bytes());
    let config_new = if unchanged {
        None
    } else {
        Some(TempFile::new(&config_path, "conf")?)
    };
    match backend {
        Backend::Sqlite => {
            let db = sqlite_file(&url)?;
            let database = &unpacked.database;
            // A stale write-ahead log of the replaced file must not be applied to the
            // restored one: nothing has it open (the lock), so it goes.
            for suffix in ["-wal", "-shm"] {
                let mut side = db.clone().into_os_string();
                side.push(suffix);
                match std::fs::remove_file(&side) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => {
                        return Err(setup(format!(
                            "cannot remove {}: {e}",
                            Path::new(&side).display()
                        )));
                    }
                }
            }
            if let Some(parent) = db.parent() {
                std::fs::create_dir_all(parent)
                    .map_err(|e| setup(format!("cannot create {}: {e}", parent.display())))?;
            }
            // Same directory as the configuration; the database may be elsewhere, so a
            // copy beside it first, then the atomic rename.
            let (beside, mut out) = TempFile::new(&db, "restore")?;
            let mut input = std::fs::File::open(&database.path)
                .map_err(|e| setup(format!("cannot read the unpacked database: {e}")))?;
            std::io::copy(&mut input, &mut out)
                .and_then(|_| out.sync_all())
                .map_err(|e| setup(format!("cannot write {}: {e}", beside.path.display())))?;
            let mut beside = beside;
            std::fs::rename(&beside.path, &db)
                .map_err(|e| setup(format!("cannot replace {}: {e}", db.display())))?;
            beside.keep = true;
        }
        Backend::Postgres => {
            let (url, password) = split_password(&libpq_url(&url));
            run_pg(
                "pg_restore",
                &[
                    "--clean".as_ref(),
                    "--if-exists".as_ref(),
                    "--no-owner".as_ref(),
                    "--no-privileges".as_ref(),
                    "--single-transaction".as_ref(),
                    "--exit-on-error".as_ref(),
                    "--dbname".as_ref(),
                    url.as_ref(),
                    unpacked.database.path.as_os_str(),
                ],
                password.as_deref(),
            )?;
        }
    }
    // The configuration: a new file beside it, renamed over it.
    if let Some((mut conf_tmp, mut out)) = config_new {
        out.write_all(config_text.as_bytes())
            .and_then(|()| out.sync_all())
            .map_err(|e| setup(format!("cannot write {}: {e}", conf_tmp.path.display())))?;
        std::fs::rename(&conf_tmp.path, &config_path)
            .map_err(|e| setup(format!("cannot replace {}: {e}", config_path.display())))?;
        conf_tmp.keep = true;
    }
    // Opening migrates an older snapshot to this binary's schema.
    let store = crate::app::open_store(&restored).await?;
    tracing::info!(schema = manifest.schema, ?backend, "backup restored");
    audit(
        &store,
        actor,
        "backup.restore",
        &file.display().to_string(),
        &format!(
            "made {} on {} (schema {})",
            manifest.created_at, manifest.node, manifest.schema
        ),
    )
    .await?;
    store.close().await;
    Ok(BackupSummary {
        file: file.to_path_buf(),
        manifest,
        database_bytes: unpacked.database_bytes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlx_parameters_are_left_out_of_the_url_given_to_pg_dump() {
        assert_eq!(
            libpq_url("postgres://u@h/db?statement-cache-capacity=0&sslmode=require"),
            "postgres://u@h/db?sslmode=require"
        );
        assert_eq!(libpq_url("postgres://u@h/db"), "postgres://u@h/db");
    }

    #[test]
    fn the_password_is_taken_out_of_the_url_for_the_environment() {
        assert_eq!(
            split_password("postgres://gw:s%40cr%3At@db.example:5432/gw?sslmode=require"),
            (
                "postgres://gw@db.example:5432/gw?sslmode=require".to_string(),
                Some("s@cr:t".to_string())
            )
        );
        assert_eq!(
            split_password("postgres://gw@db/gw"),
            ("postgres://gw@db/gw".to_string(), None)
        );
        assert_eq!(
            split_password("postgres://db/gw"),
            ("postgres://db/gw".to_string(), None)
        );
    }

    #[test]
    fn an_in_memory_database_has_no_file_to_back_up() {
        assert!(sqlite_file("sqlite::memory:").is_err());
        assert_eq!(
            sqlite_file("sqlite:///var/lib/smimegate/db.sqlite?mode=rwc").ok(),
            Some(PathBuf::from("/var/lib/smimegate/db.sqlite"))
        );
    }
}
