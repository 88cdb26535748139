//! `initguard::cli::main`: the runtime, logging, and one function per subcommand.

use super::args::{
    Cli, Command, HistoryArgs, LogFormat, ReleaseArgs, ResetArgs, RunArgs, StatusArgs, WaitArgs,
};
use super::failure::{Failure, exit_code};
use super::{report, settings, usage};
use crate::runner::Signals;
use crate::store::{self, AcquireOpts, ReleaseOutcome, Store, StoreError};
use crate::task::{Holder, Key, TaskId};
use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use tracing::info;

pub fn main() -> ExitCode {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    // The supervisor first, before any runtime or signal handler: it handles its signals itself.
    if args.get(1).is_some_and(|a| a == crate::supervisor::ARG) {
        return crate::supervisor::main(&args[2..]);
    }
    let secrets = secrets();
    // One thread: the supervisor must be spawned from a thread that lives as long as it does, or
    // its parent-death signal would fire early (see runner.rs).
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fail(&Failure::Runtime(e), &secrets),
    };
    // First thing once a runtime exists to receive them: from here on SIGTERM/SIGINT/SIGHUP/
    // SIGQUIT are initguard's to honour (every wait races them), never a silent death midway.
    let signals = {
        let _in_runtime = runtime.enter();
        Signals::install()
    };
    let mut signals = match signals {
        Ok(s) => s,
        Err(e) => return fail(&Failure::Runtime(e), &secrets),
    };
    let cli = match super::parse::parse(args) {
        Ok(cli) => cli,
        // --help and --version: their text, on stdout, exit 0.
        Err(e) if !e.use_stderr() => {
            let _ = e.print();
            return ExitCode::from(crate::exit::OK);
        }
        Err(e) => {
            // args_os: a non-UTF-8 argument must not panic here.
            let args: Vec<String> = std::env::args_os()
                .skip(1)
                .map(|a| a.to_string_lossy().into_owned())
                .collect();
            let line = store::scrub(&usage::one_line(&e, &args), &secrets);
            let _ = writeln!(std::io::stderr(), "initguard: {line}");
            return ExitCode::from(crate::exit::USAGE);
        }
    };
    init_logging(cli.log_format);
    let result = runtime.block_on(async {
        let result = dispatch(cli, &mut signals).await;
        // A statement given up on (lease lost, signal) is cancelled from a spawned task: it
        // must reach the server before the exit, or the statement would run on after it.
        #[cfg(feature = "postgres")]
        store::postgres::cancel::settle(store::postgres::cancel::SETTLE_LIMIT).await;
        result
    });
    // Without waiting for blocking work still in flight (a DNS lookup or a write to a pipe
    // nobody reads): everything that matters has been awaited, and an exit must not hang.
    runtime.shutdown_background();
    match result {
        Ok(code) => ExitCode::from(code),
        Err(f) => fail(&f, &secrets),
    }
}

/// `work`, unless one of the signals comes first: then `Failure::Signal` at once (exit 128+N),
/// dropping `work` wherever it was. Only for work that may stop anywhere (reads, or writes that
/// leave nothing a lapse does not clean up).
pub(super) async fn interruptible<T, E: Into<Failure>>(
    signals: &mut Signals,
    during: impl Into<String>,
    work: impl std::future::Future<Output = Result<T, E>>,
) -> Result<T, Failure> {
    tokio::select! {
        // A signal that is already pending wins over work that could finish at once.
        biased;
        signal = signals.recv() => Err(Failure::Signal { signal, during: during.into() }),
        res = work => res.map_err(Into::into),
    }
}

/// What may be a password in the arguments and in the variables that take a URL, so that no error
/// line repeats one, whatever a parser or server put into its message.
/// The command's own arguments (after `--`) are not initguard's to judge.
fn secrets() -> Vec<String> {
    let args = std::env::args_os().skip(1).take_while(|a| a != "--");
    let vars = settings::STORE_ENV
        .iter()
        .chain(super::steps::STEPS_ENV)
        .filter_map(std::env::var_os);
    let out = args
        .chain(vars)
        .flat_map(|a| store::secret_parts(&a.to_string_lossy()));
    // The ZooKeeper digest password (INITGUARD_ZK_AUTH or its file) is no URL part.
    #[cfg(feature = "zookeeper")]
    let out = out.chain(store::zookeeper::env_secrets());
    out.collect()
}

fn fail(f: &Failure, secrets: &[String]) -> ExitCode {
    let line = store::scrub(&f.to_string(), secrets);
    let _ = writeln!(std::io::stderr(), "initguard: {line}");
    ExitCode::from(exit_code(f))
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("INITGUARD_LOG")
        // kube's client logs each failed request at ERROR; the store reports them once, in its
        // own words, after its bounded retries. zookeeper_client logs every session it opens
        // and closes at INFO, and each reconnect at WARN; the ZooKeeper store reports what
        // matters (a lost session, an unreachable server) itself.
        .unwrap_or_else(|_| {
            tracing_subscriber::EnvFilter::new("info,kube_client=off,zookeeper_client=error")
        });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::stderr().is_terminal());
    match format {
        // People read the text form in `kubectl logs`: the message already says it all, so the
        // structured fields (kept for --log-format json) would only repeat it.
        LogFormat::Text => builder
            .fmt_fields(tracing_subscriber::fmt::format::debug_fn(
                |w, field, value| {
                    if field.name() == "message" {
                        write!(w, "{value:?}")
                    } else {
                        Ok(())
                    }
                },
            ))
            .init(),
        LogFormat::Json => builder.json().init(),
    }
}

async fn dispatch(cli: Cli, signals: &mut Signals) -> Result<u8, Failure> {
    let url = &settings::StoreChoice {
        raw: cli.store.store.as_deref(),
        kube_context: cli.store.kube_context.as_deref(),
        password_file: cli.store.store_password_file.as_deref(),
        pg_schema: cli.store.pg_schema.as_deref(),
    };
    match cli.command {
        Command::Run(args) => run(url, *args, signals).await,
        Command::Wait(args) => interruptible(signals, "waiting", wait(url, *args)).await,
        Command::Status(args) => {
            interruptible(signals, "reading the store", status(url, args)).await
        }
        Command::History(args) => {
            interruptible(signals, "reading the store", history(url, args)).await
        }
        Command::Reset(args) => {
            let during = format!("resetting {}; a lease it held lapses on its own", args.key);
            interruptible(signals, during, reset(url, args)).await
        }
        Command::Release(args) => {
            let during = format!("releasing the lease on {}; nothing was released", args.key);
            interruptible(signals, during, release(url, args)).await
        }
        Command::Steps(cmd) => super::steps::steps(url, cmd.command, signals).await,
        // verify stops its commands on a signal itself, and says so in its report.
        Command::Verify(args) => super::verify::verify(*args).await,
        #[cfg(feature = "kubernetes")]
        Command::K8s(super::args::K8sCommand::Rbac(args)) => rbac(&args),
        Command::Install(args) => super::k8s_tooling::install(&args),
        #[cfg(feature = "kubernetes")]
        Command::K8s(super::args::K8sCommand::Inject(args)) => super::k8s_tooling::inject(&args),
        #[cfg(feature = "kubernetes")]
        Command::K8s(super::args::K8sCommand::Lint(args)) => super::k8s_tooling::lint(&args),
    }
}

/// `initguard k8s rbac`: YAML on stdout, nothing else touched.
#[cfg(feature = "kubernetes")]
fn rbac(args: &super::args::RbacArgs) -> Result<u8, Failure> {
    let yaml = crate::k8s::rbac::render(&args.namespace, &args.service_account)?;
    print!("{yaml}");
    Ok(crate::exit::OK)
}

async fn open(url: &settings::StoreChoice<'_>) -> Result<Box<dyn Store>, Failure> {
    let url = settings::store_url(url)?;
    let store = store::open(&url).await?;
    // describe(): the store as resolved (e.g. the namespace and credentials source of kubernetes:).
    info!(store = %url.redacted(), "store {}", store.describe());
    Ok(store)
}

async fn run(
    url: &settings::StoreChoice<'_>,
    args: RunArgs,
    signals: &mut Signals,
) -> Result<u8, Failure> {
    // Validate everything before touching the store.
    let id = settings::task_id(&args.task)?;
    settings::check_not_nested(&id)?;
    let url = settings::store_url(url)?;
    let sql = settings::sql_task(&args)?;
    let fp = settings::fingerprint(&args, sql.as_ref())?;
    if args.print_fingerprint {
        print!("{}", report::fingerprint(&fp));
        return Ok(crate::exit::OK);
    }
    let plan = settings::plan(&args, id, fp.value.clone(), sql)?;
    if plan.sql.is_some() && !url.runs_sql() {
        return Err(StoreError::Unsupported {
            store: url.redacted(),
            what: crate::guard::SQL_TASKS.into(),
        }
        .into());
    }
    // The record is read as the store is opened (on PostgreSQL in the same round trip).
    let (store, early) = interruptible(
        signals,
        "opening the store; nothing was run",
        store::open_reading(&url, &plan.id),
    )
    .await?;
    info!(store = %url.redacted(), key = %plan.id, fingerprint = %plan.fingerprint, "store {}, task {}, fingerprint {}", store.describe(), plan.id, plan.fingerprint);
    let outcome = crate::guard::Guard::new(store.as_ref(), &plan)
        .after_read(early)
        .run(signals)
        .await?;
    Ok(outcome.exit_code())
}

/// `initguard wait`: exit 0 once the task has succeeded; never writes to the store.
async fn wait(url: &settings::StoreChoice<'_>, args: WaitArgs) -> Result<u8, Failure> {
    let plan = settings::wait_plan(&args)?;
    let store = open(url).await?;
    let rec = crate::wait::wait(store.as_ref(), &plan).await?;
    info!(key = %plan.id, "{} has succeeded{}: done waiting", plan.id, rec.holder.as_ref().map(|h| format!(" (by {h})")).unwrap_or_default());
    Ok(crate::exit::OK)
}

async fn status(url: &settings::StoreChoice<'_>, args: StatusArgs) -> Result<u8, Failure> {
    let key = args
        .key
        .as_deref()
        .map(Key::parse)
        .transpose()
        .map_err(settings::SettingsError::from)?;
    let store = open(url).await?;
    let listing = store.list().await?;
    let keep = |k: &str| key.as_ref().is_none_or(|want| want.as_str() == k);
    let mut records = listing.records;
    records.retain(|r| keep(&r.key));
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&records).unwrap_or_default()
        );
    } else {
        print!("{}", report::status_table(&records, chrono::Utc::now()));
        if let Some(note) = report::trimmed_note(&records, store.record_limit()) {
            print!("{note}");
        }
    }
    Ok(report_unreadable(
        listing
            .unreadable
            .iter()
            .filter(|(id, _)| keep(id.key.as_str())),
    ))
}

/// The records a listing could not read, one line each on stderr; exit 65 when there were any,
/// so that scripts notice while people still see every readable record.
fn report_unreadable<'a>(unreadable: impl Iterator<Item = &'a (TaskId, StoreError)>) -> u8 {
    let mut code = crate::exit::OK;
    for (_, e) in unreadable {
        let _ = writeln!(std::io::stderr(), "initguard: {e}");
        code = crate::exit::DATA_ERR;
    }
    code
}

async fn history(url: &settings::StoreChoice<'_>, args: HistoryArgs) -> Result<u8, Failure> {
    let key = Key::parse(&args.key).map_err(settings::SettingsError::from)?;
    let store = open(url).await?;
    let listing = store.list().await?;
    let mut records = listing.records;
    records.retain(|r| r.key == key.as_str());
    if args.json {
        println!("{}", report::history_json(&records));
    } else {
        print!("{}", report::history_table(&records));
    }
    Ok(report_unreadable(
        listing.unreadable.iter().filter(|(id, _)| id.key == key),
    ))
}

async fn reset(url: &settings::StoreChoice<'_>, args: ResetArgs) -> Result<u8, Failure> {
    let key = Key::parse(&args.key).map_err(settings::SettingsError::from)?;
    let wait_timeout = settings::wait_timeout(&args.wait_timeout)?;
    let sql_target = settings::sql_target(args.sql_target.as_deref())?;
    let store = open(url).await?;
    let opts = crate::reset::ResetOptions {
        acquire: AcquireOpts {
            ttl: std::time::Duration::from_secs(30),
            wait_timeout,
        },
        history: crate::record::DEFAULT_HISTORY,
        sql_target,
    };
    let holder = Holder::from_env();
    let done = crate::reset::reset(store.as_ref(), &key, &holder, &opts).await?;
    if done.is_empty() {
        info!(key = %key, "nothing to reset: no record of {key}");
    }
    for d in done {
        let id = &d.id;
        match d.completions_cleared {
            Some(n) => {
                info!(key = %id, "reset {id} (was {}) and deleted {n} completion row(s) in the --sql-target database: the next run runs", d.was)
            }
            None => info!(key = %id, "reset {id} (was {}): the next run runs", d.was),
        }
    }
    Ok(crate::exit::OK)
}

async fn release(url: &settings::StoreChoice<'_>, args: ReleaseArgs) -> Result<u8, Failure> {
    let id = settings::task_id_of(&args.key, &args.scope)?;
    let store = open(url).await?;
    let me = Holder::from_env();
    match crate::release::release_holder(store.as_ref(), &id, &me).await? {
        ReleaseOutcome::Released { holder } => {
            info!(key = %id, "released the lease on {id} held by {holder}, which no longer renewed it")
        }
        ReleaseOutcome::StillAlive {
            holder,
            renewed_within,
        } => {
            // Rounded up to a tenth: the renewal was seen between two looks, at most this long ago.
            let ago = (renewed_within.as_secs_f64() * 10.0).ceil().max(1.0) / 10.0;
            info!(
                key = %id,
                "not released: the holder of {id}, {holder}, is alive (it renewed its lease less \
                 than {ago:.1}s ago); it gives the lease up when it exits"
            )
        }
        ReleaseOutcome::NotHeld => {
            info!(key = %id, "nothing to release: nobody holds the lease on {id}")
        }
        ReleaseOutcome::HeldByOther { holder } => info!(
            key = %id,
            "nothing released: the lease on {id} is held by {}, not by this holder",
            holder.map(|h| h.to_string()).unwrap_or_else(|| "another process".into())
        ),
    }
    Ok(crate::exit::OK)
}
