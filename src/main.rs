//! Wiring only: parse the command line, load the configuration, export the SoftHSM2
//! configuration while the process is still single-threaded, start the runtime, run.

use std::process::ExitCode;

use clap::Parser;
use smimegate::cli::{self, Cli, Command};
use smimegate::config::Settings;
use smimegate::hsm::provision::export_softhsm2_conf;
use smimegate::setup;

fn main() -> ExitCode {
    large_buffers_mapped();
    let args = Cli::parse();
    let config_file = args
        .config
        .clone()
        .unwrap_or_else(|| args.data_dir.join(smimegate::config::CONFIG_FILE));
    let loaded = match &args.command {
        Command::Init => {
            setup::prepare_data_dir(&args.data_dir, &config_file).map_err(anyhow::Error::from)
        }
        // The sink needs no data directory.
        Command::Sink(_) | Command::SmtpLoad(_) => Ok((
            Settings::new(args.data_dir.clone(), smimegate::config::Config::default()),
            Vec::new(),
        )),
        _ => Settings::load_from(&args.data_dir, &config_file)
            .map(|s| (s, Vec::new()))
            .map_err(anyhow::Error::from),
    };
    let (settings, changes) = match loaded {
        Ok(loaded) => loaded,
        Err(e) => return fail(&e),
    };
    init_tracing(
        &settings,
        matches!(args.command, Command::Serve(_) | Command::Sink(_)),
    );
    if let Some(conf) = settings.softhsm2_conf() {
        #[allow(unsafe_code)]
        // SAFETY: no other thread exists yet; the runtime is built below.
        unsafe {
            export_softhsm2_conf(&conf)
        };
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fail(&anyhow::Error::from(e)),
    };
    let result = runtime.block_on(cli::run(args.command, settings, changes));
    // Every token handle is gone with the command; the runtime's threads with it.
    drop(runtime);
    smimegate::hsm::finalize_modules();
    match result {
        // A reader that closed the pipe (`| head`) took what it wanted.
        Err(e) if cli::output::is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => fail(&e),
        Ok(()) => match cli::output::write_error() {
            Some(e) => fail(&anyhow::Error::msg(format!("cannot write to stdout: {e}"))),
            None => ExitCode::SUCCESS,
        },
    }
}

/// Every allocation of 256 KiB or more gets its own mapping from glibc (`mallopt`
/// `M_MMAP_THRESHOLD`, which also stops glibc from raising that threshold to the size
/// of the last large block freed): a message buffer goes back to the system the moment
/// it is dropped and grows by `mremap` without being copied, instead of staying in a
/// per-thread heap where the next message cannot always reuse it. Without this, the
/// gateway's resident memory after a few 10 MB messages was several times what they
/// needed at once (DESIGN §8, docs/operations.md "Memory").
fn large_buffers_mapped() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        const M_MMAP_THRESHOLD: std::ffi::c_int = -3;
        #[allow(unsafe_code)]
        // SAFETY: glibc's mallopt(3), declared with its C signature; called before any
        // other thread exists, with a documented parameter and a value in range.
        unsafe {
            unsafe extern "C" {
                fn mallopt(param: std::ffi::c_int, value: std::ffi::c_int) -> std::ffi::c_int;
            }
            mallopt(M_MMAP_THRESHOLD, 256 * 1024);
        }
    }
}

/// One line on stderr, no backtrace.
fn fail(err: &anyhow::Error) -> ExitCode {
    eprintln!("smimegate: error: {}", cli::error_line(err));
    // An operation the operator can correct in the command line exits 2.
    match err
        .chain()
        .find_map(|c| c.downcast_ref::<smimegate::ops::OpError>())
    {
        Some(op) => ExitCode::from(u8::try_from(op.exit_code()).unwrap_or(1)),
        None => ExitCode::FAILURE,
    }
}

/// The service logs at the configured level; one-shot commands only warn, so their
/// output stays readable. RUST_LOG, when set and valid, overrides both (an invalid
/// [log].filter was already refused when the configuration loaded). The service's filter can be
/// changed at run time (SIGHUP reloads [log].filter).
fn init_tracing(settings: &Settings, service: bool) {
    use tracing_subscriber::EnvFilter;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let configured = if service {
        settings.config.log.filter.as_str()
    } else {
        "warn"
    };
    // cryptoki logs every vendor mechanism it has no name for as an error.
    let quiet_cryptoki = |filter: EnvFilter| match "cryptoki::mechanism=off".parse() {
        Ok(directive) => filter.add_directive(directive),
        Err(_) => filter,
    };
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(configured))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let (filter, handle) = tracing_subscriber::reload::Layer::new(quiet_cryptoki(filter));
    let registry = tracing_subscriber::registry().with(filter);
    // One line per event; colour codes only on a terminal, so journald (or a file,
    // or a pipe) gets plain text.
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    if settings.config.log.json {
        registry.with(fmt.json()).init();
    } else {
        registry.with(fmt).init();
    }
    cli::serve::set_log_reloader(Box::new(move |text| {
        let filter = EnvFilter::try_new(text).map_err(|e| e.to_string())?;
        handle
            .reload(quiet_cryptoki(filter))
            .map_err(|e| e.to_string())
    }));
}
