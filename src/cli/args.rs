//! clap definitions: every flag of every subcommand, with its `INITGUARD_*` variable. No logic.

use super::limits::{MAX_ATTEMPTS, MAX_HISTORY, MAX_RETRIES, MAX_TAIL_BYTES};
use clap::builder::RangedU64ValueParser;
use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(
    name = "initguard",
    version,
    about = "Run an init command once per change of its inputs, by one replica at a time",
    propagate_version = false
)]
pub struct Cli {
    /// The store options given before the subcommand; `parse` merges in those given after it.
    #[command(flatten)]
    pub store: StoreArgs,

    /// Log format on stderr
    #[arg(
        long,
        env = "INITGUARD_LOG_FORMAT",
        value_enum,
        default_value = "text",
        global = true,
        help_heading = GLOBAL_HEADING
    )]
    pub log_format: LogFormat,

    #[command(subcommand)]
    pub command: Command,
}

/// Help headings, so that what every subcommand shares stands apart from its own options.
pub const GLOBAL_HEADING: &str = "Global options";
pub const STORE_HEADING: &str = "Store options";

/// Where records and leases live. Not `global`: only the subcommands that open a store take them
/// (`k8s rbac` and `verify` do not, and their help does not list them). They are accepted before
/// the subcommand (`initguard --store URL status`) as well as after it.
#[derive(Debug, Clone, Default, Args)]
pub struct StoreArgs {
    /// Store URL: file:DIR, postgres://…, kubernetes:[NAMESPACE], zookeeper://HOST:PORT[/CHROOT],
    /// etcd://HOST:PORT[,…]. Default: kubernetes: in a Pod with a service-account token, else
    /// file:.initguard
    // The variable's value may hold a password: never shown in --help.
    #[arg(
        long,
        env = "INITGUARD_STORE",
        hide_env_values = true,
        help_heading = STORE_HEADING
    )]
    pub store: Option<String>,

    /// File holding the store's password (first line): postgres:// (instead of PGPASSWORD or
    /// ~/.pgpass) and etcd:// (the password of INITGUARD_ETCD_USER)
    #[arg(long, env = "INITGUARD_STORE_PASSWORD_FILE", help_heading = STORE_HEADING)]
    pub store_password_file: Option<PathBuf>,

    /// Schema for initguard's tables in a postgres:// store (default: initguard, or ?schema=)
    #[arg(long, env = "INITGUARD_PG_SCHEMA", help_heading = STORE_HEADING)]
    pub pg_schema: Option<String>,

    /// kubeconfig context for the kubernetes: store (default: the in-cluster service account, else
    /// the current context)
    #[arg(long, env = "INITGUARD_KUBE_CONTEXT", help_heading = STORE_HEADING)]
    pub kube_context: Option<String>,
}

/// The argument ids of `StoreArgs` (clap's, from the field names).
pub const STORE_ARG_IDS: [&str; 4] = ["store", "store_password_file", "pg_schema", "kube_context"];

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run COMMAND once per fingerprint, one holder at a time; others wait, then skip
    Run(Box<RunArgs>),
    /// Wait until the task KEY has succeeded (with the fingerprint run's options compute, or any
    /// with --any), without ever running it or writing to the store
    Wait(Box<WaitArgs>),
    /// Show the recorded state of every task, or of KEY
    Status(StatusArgs),
    /// Show the past runs of KEY
    History(HistoryArgs),
    /// Forget success or gave_up of KEY so that the next run runs
    Reset(ResetArgs),
    /// Free this Pod's (or host's) lease on a task if its holder is gone, e.g. from a preStop hook
    Release(ReleaseArgs),
    /// Test COMMAND for idempotence: run it twice, as copies at once, and cut short then re-run,
    /// and compare the state each leaves with one clean run's
    Verify(Box<VerifyArgs>),
    /// Versioned steps: apply a directory of SQL migrations and scripts, each exactly once, in
    /// version order, under one lease
    Steps(StepsArgs),
    /// Copy this binary to DIR/initguard (mode 0755), e.g. into an emptyDir from a scratch image
    Install(InstallArgs),
    /// Kubernetes manifest tooling
    #[cfg(feature = "kubernetes")]
    #[command(subcommand)]
    K8s(K8sCommand),
}

/// `steps`: the store options may come here too (`initguard steps --store URL status DIR`),
/// between the two places `run` and the others take them.
#[derive(Debug, Args)]
pub struct StepsArgs {
    /// Merged into `Cli::store` by `parse`; read from there.
    #[command(flatten)]
    pub store: StoreArgs,
    #[command(subcommand)]
    pub command: StepsCommand,
}

#[derive(Debug, Subcommand)]
pub enum StepsCommand {
    /// Apply the steps of DIR not applied yet, in version order, under one lease; skip at once
    /// when nothing changed since the last apply
    Apply(Box<StepsApplyArgs>),
    /// Show every step of DIR and its state (applied, pending, changed, missing, failed, running)
    Status(StepsStatusArgs),
    /// Check DIR against the history without applying anything; exit 1 on any problem
    Validate(StepsValidateArgs),
    /// Accept the files of DIR as they are now: realign checksums, forget missing and failed steps
    Repair(StepsRepairArgs),
}

/// Which set, and where its history is: shared by every `steps` subcommand.
#[derive(Debug, Args)]
pub struct StepsSetArgs {
    /// Directory of step files: V<version>__<description>.sql|<script>, R__<description>.<ext>,
    /// or golang-migrate's NNN_<description>.up.sql
    pub dir: PathBuf,

    /// Task name of the set (its lease and record): 1–200 chars of [A-Za-z0-9._/-]. Default:
    /// steps-<DIR's base name>
    #[arg(long)]
    pub key: Option<String>,

    /// PostgreSQL database the SQL steps run in and their history is kept in
    /// (initguard.steps_history). Default: the store's database when the store is postgres://;
    /// required for SQL steps otherwise (password: PGPASSWORD/PGPASSFILE or
    /// --target-password-file, not the URL)
    #[arg(long, env = "INITGUARD_STEPS_TARGET", hide_env_values = true)]
    pub target: Option<String>,

    /// File holding the target database's password (first line)
    #[arg(long, env = "INITGUARD_STEPS_TARGET_PASSWORD_FILE")]
    pub target_password_file: Option<PathBuf>,

    /// Merged into `Cli::store` by `parse`; read from there.
    #[command(flatten)]
    pub store: StoreArgs,
}

/// The validation errors a run accepts.
#[derive(Debug, Args)]
pub struct StepsAllowArgs {
    /// Accept applied steps whose file changed since (a warning instead of an error)
    #[arg(long, env = "INITGUARD_STEPS_ALLOW_CHANGED")]
    pub allow_changed: bool,

    /// Accept applied steps whose file is gone (a warning instead of an error)
    #[arg(long, env = "INITGUARD_STEPS_ALLOW_MISSING")]
    pub allow_missing: bool,

    /// Apply pending steps older than the newest applied one, instead of refusing them
    #[arg(long, env = "INITGUARD_STEPS_OUT_OF_ORDER")]
    pub out_of_order: bool,
}

/// The lease `run` and `steps apply` take: how long it lasts, how long to wait for it.
#[derive(Debug, Args)]
pub struct LeaseArgs {
    /// Lease duration, 1s to 365d; a dead holder's lease is taken over after it
    #[arg(
        long,
        env = "INITGUARD_LOCK_TTL",
        default_value = "30s",
        allow_hyphen_values = true
    )]
    pub lock_ttl: String,

    /// How long to wait for another holder's lease, up to 365d; 0: do not wait; "forever": no
    /// limit
    #[arg(
        long,
        env = "INITGUARD_WAIT_TIMEOUT",
        default_value = "1h",
        allow_hyphen_values = true
    )]
    pub wait_timeout: String,
}

#[derive(Debug, Args)]
pub struct StepsApplyArgs {
    #[command(flatten)]
    pub set: StepsSetArgs,

    #[command(flatten)]
    pub allow: StepsAllowArgs,

    /// On first use, take over this tool's history table, so that what it applied is not applied
    /// again: flyway, golang-migrate, sqlx, dbmate
    #[arg(long, env = "INITGUARD_STEPS_ADOPT", value_enum)]
    pub adopt: Option<AdoptArg>,

    /// What to do with a script step whose previous run was interrupted: run it again (with
    /// INITGUARD_PREVIOUS=interrupted), or stop (exit 75)
    #[arg(
        long,
        env = "INITGUARD_ON_INTERRUPTED",
        value_enum,
        default_value = "rerun"
    )]
    pub on_interrupted: OnInterruptedArg,

    /// Print the plan (what would run, in order), take no lease, change nothing (not with
    /// --adopt, which writes the adopted history)
    #[arg(long, conflicts_with = "adopt")]
    pub dry_run: bool,

    #[command(flatten)]
    pub lease: LeaseArgs,

    /// Time between forwarding SIGTERM to a script step and sending SIGKILL, up to 365d
    #[arg(
        long,
        env = "INITGUARD_GRACE",
        default_value = "10s",
        allow_hyphen_values = true
    )]
    pub grace: String,

    /// Bytes of script output kept in the record, 0 to 1048576; 0: keep none
    #[arg(
        long,
        env = "INITGUARD_TAIL_BYTES",
        default_value_t = 4096,
        allow_hyphen_values = true,
        value_parser = RangedU64ValueParser::<usize>::new().range(0..=MAX_TAIL_BYTES)
    )]
    pub tail_bytes: usize,

    /// Runs kept in the record's history, 1 to 1000
    #[arg(
        long,
        env = "INITGUARD_HISTORY",
        default_value_t = crate::record::DEFAULT_HISTORY,
        allow_hyphen_values = true,
        value_parser = RangedU64ValueParser::<usize>::new().range(1..=MAX_HISTORY)
    )]
    pub history: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AdoptArg {
    Flyway,
    GolangMigrate,
    Sqlx,
    Dbmate,
}

#[derive(Debug, Args)]
pub struct StepsStatusArgs {
    #[command(flatten)]
    pub set: StepsSetArgs,

    /// JSON (steps and problems) instead of a table
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct StepsValidateArgs {
    #[command(flatten)]
    pub set: StepsSetArgs,

    #[command(flatten)]
    pub allow: StepsAllowArgs,
}

#[derive(Debug, Args)]
pub struct StepsRepairArgs {
    #[command(flatten)]
    pub set: StepsSetArgs,

    /// How long to wait for a running apply's lease, up to 365d; 0: do not wait; "forever": no
    /// limit
    #[arg(
        long,
        env = "INITGUARD_WAIT_TIMEOUT",
        default_value = "1m",
        allow_hyphen_values = true
    )]
    pub wait_timeout: String,
}

#[cfg(feature = "kubernetes")]
#[derive(Debug, Subcommand)]
pub enum K8sCommand {
    /// Print the least-privilege ServiceAccount, Role and RoleBinding the kubernetes: store needs
    Rbac(RbacArgs),
    /// Wrap the init containers of workload manifests in `initguard run` (YAML on stdout)
    Inject(InjectArgs),
    /// Flag the manifest shapes that make init containers run twice or hang (exit 1 on errors)
    Lint(LintArgs),
}

// `initguard install`, `k8s inject` and `k8s lint` (issue 13), kept together for easy merges.

#[derive(Debug, Args)]
pub struct InstallArgs {
    /// Directory to copy the binary into (an emptyDir shared with the wrapped containers)
    pub dir: PathBuf,
}

#[cfg(feature = "kubernetes")]
#[derive(Debug, Args)]
pub struct InjectArgs {
    /// Manifest file, or - for stdin
    #[arg(short = 'f', long = "filename", default_value = "-")]
    pub file: PathBuf,

    /// Wrap only this init container (repeatable; default: every init container)
    #[arg(long = "container")]
    pub containers: Vec<String>,

    /// Only workloads annotated initguard.io/inject ("true", or a comma-separated container list)
    #[arg(long)]
    pub only_annotated: bool,

    /// Image holding initguard at /usr/local/bin/initguard: a first init container copies it
    /// into an emptyDir mounted at /initguard in the wrapped containers
    #[arg(long, value_name = "IMAGE")]
    pub install: Option<String>,

    /// initguard's path in the wrapped containers (default: initguard, or /initguard/initguard
    /// with --install)
    #[arg(long, value_name = "PATH")]
    pub binary: Option<String>,

    /// Also fingerprint mounted Secret volumes (off: a low-entropy secret's hash can be guessed)
    #[arg(long)]
    pub input_secrets: bool,

    /// Scope of every wrapped task (default: node for DaemonSets, else global)
    #[arg(long)]
    pub scope: Option<String>,

    /// CONTAINER=ENTRYPOINT for an init container that has no command (its image's ENTRYPOINT);
    /// ENTRYPOINT is split on spaces (repeatable)
    #[arg(long = "command", value_name = "CONTAINER=ENTRYPOINT")]
    pub commands: Vec<String>,

    /// Namespace for the keys and RBAC of objects that name none (default: the Pod's, at run time)
    #[arg(long, short = 'n')]
    pub namespace: Option<String>,

    /// INITGUARD_STORE for the wrapped containers (default: kubernetes: in the Pod)
    #[arg(long, value_name = "URL")]
    pub pod_store: Option<String>,

    /// Append the RBAC of `initguard k8s rbac` for the wrapped workloads' service accounts
    #[arg(long)]
    pub rbac: bool,
}

#[cfg(feature = "kubernetes")]
#[derive(Debug, Args)]
pub struct LintArgs {
    /// Manifest file, or - for stdin
    #[arg(short = 'f', long = "filename", default_value = "-")]
    pub file: PathBuf,

    /// Output format
    #[arg(long, value_enum, default_value = "text")]
    pub format: LintFormat,
}

#[cfg(feature = "kubernetes")]
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LintFormat {
    Text,
    Json,
    Sarif,
}

#[cfg(feature = "kubernetes")]
#[derive(Debug, Args)]
pub struct RbacArgs {
    /// Namespace the store keeps its Leases in (the Pods' namespace)
    #[arg(long, short = 'n', default_value = "default")]
    pub namespace: String,
    /// Service account the Pods run as
    #[arg(long, default_value = crate::k8s::rbac::DEFAULT_SERVICE_ACCOUNT)]
    pub service_account: String,
}

#[derive(Debug, Args)]
pub struct TaskArgs {
    /// Task name: 1–200 chars of [A-Za-z0-9._/-], no '..', no leading '/'. No variable: the
    /// command's INITGUARD_KEY names its enclosing run, and is never read as configuration
    #[arg(long)]
    pub key: String,

    /// What "once" means: global, pod (per POD_UID) or node (per NODE_NAME)
    #[arg(long, env = "INITGUARD_SCOPE", default_value = "global")]
    pub scope: String,
}

/// What goes into the fingerprint besides the command: shared by `run` and `wait`, so that the
/// same options compute the same fingerprint.
#[derive(Debug, Args)]
pub struct FingerprintArgs {
    /// File or directory whose content is part of the fingerprint (repeatable; env: comma-separated)
    #[arg(long = "input", env = "INITGUARD_INPUT", value_delimiter = ',')]
    pub inputs: Vec<PathBuf>,

    /// Environment variable whose value is part of the fingerprint (repeatable; env: comma-separated)
    #[arg(long = "input-env", env = "INITGUARD_INPUT_ENV", value_delimiter = ',')]
    pub input_env: Vec<String>,

    /// A version string that is part of the fingerprint
    #[arg(long = "version", env = "INITGUARD_VERSION")]
    pub version: Option<String>,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub task: TaskArgs,

    /// Merged into `Cli::store` by `parse`; read from there.
    #[command(flatten)]
    pub store: StoreArgs,

    #[command(flatten)]
    pub fingerprint: FingerprintArgs,

    #[command(flatten)]
    pub lease: LeaseArgs,

    /// In-process retries after a failed attempt, 0 to 1000
    #[arg(
        long,
        env = "INITGUARD_RETRIES",
        default_value_t = 0,
        allow_hyphen_values = true,
        value_parser = clap::value_parser!(u32).range(0..=MAX_RETRIES)
    )]
    pub retries: u32,

    /// First pause between retries, up to 365d; doubles each retry, with jitter; 0: retry at once
    #[arg(
        long,
        env = "INITGUARD_BACKOFF",
        default_value = "1s",
        allow_hyphen_values = true
    )]
    pub backoff: String,

    /// Failed attempts (across restarts) after which the task gives up, up to 1000; 0: never
    #[arg(
        long,
        env = "INITGUARD_MAX_ATTEMPTS",
        default_value_t = 0,
        allow_hyphen_values = true,
        value_parser = clap::value_parser!(u32).range(0..=MAX_ATTEMPTS)
    )]
    pub max_attempts: u32,

    /// What to do when the previous run was interrupted
    #[arg(
        long,
        env = "INITGUARD_ON_INTERRUPTED",
        value_enum,
        default_value = "rerun"
    )]
    pub on_interrupted: OnInterruptedArg,

    /// Shell command; if it exits 0 under the lease, the task is recorded done without running
    #[arg(long, env = "INITGUARD_DONE_IF")]
    pub done_if: Option<String>,

    /// Kill the command after this long (exit 124), more than 0 and up to 365d; leave it out for
    /// no limit
    #[arg(long, env = "INITGUARD_TIMEOUT", allow_hyphen_values = true)]
    pub timeout: Option<String>,

    /// Time between forwarding SIGTERM and sending SIGKILL, up to 365d; 0: SIGKILL at once
    #[arg(
        long,
        env = "INITGUARD_GRACE",
        default_value = "10s",
        allow_hyphen_values = true
    )]
    pub grace: String,

    /// Let the command write straight to initguard's stdout/stderr; keep no tail
    #[arg(long, env = "INITGUARD_NO_CAPTURE")]
    pub no_capture: bool,

    /// Bytes of output kept in the record, 0 to 1048576; 0: keep none
    #[arg(
        long,
        env = "INITGUARD_TAIL_BYTES",
        default_value_t = 4096,
        allow_hyphen_values = true,
        value_parser = RangedU64ValueParser::<usize>::new().range(0..=MAX_TAIL_BYTES)
    )]
    pub tail_bytes: usize,

    /// Runs kept in the record's history, 1 to 1000
    #[arg(
        long,
        env = "INITGUARD_HISTORY",
        default_value_t = crate::record::DEFAULT_HISTORY,
        allow_hyphen_values = true,
        value_parser = RangedU64ValueParser::<usize>::new().range(1..=MAX_HISTORY)
    )]
    pub history: usize,

    /// Let the command inherit initguard's store settings (INITGUARD_STORE,
    /// INITGUARD_STORE_PASSWORD_FILE, INITGUARD_SQL_TARGET, INITGUARD_ZK_AUTH[_FILE],
    /// INITGUARD_ETCD_*), which may carry credentials; by default they are removed from its
    /// environment
    #[arg(long, env = "INITGUARD_PASS_STORE_ENV")]
    pub pass_store_env: bool,

    /// Print the fingerprint and what went into it, run nothing
    #[arg(long, env = "INITGUARD_PRINT_FINGERPRINT")]
    pub print_fingerprint: bool,

    /// SQL file to run instead of a command: it commits in one transaction with its success
    /// record (PostgreSQL store), so its effect happens exactly once. Part of the fingerprint
    #[arg(long, env = "INITGUARD_SQL", conflicts_with_all = ["sql_inline", "command"])]
    pub sql: Option<PathBuf>,

    /// SQL text to run like --sql
    #[arg(long, env = "INITGUARD_SQL_INLINE", conflicts_with = "command")]
    pub sql_inline: Option<String>,

    /// PostgreSQL database the SQL runs in when it is not the store's; the completion row is
    /// then kept there, in the same transaction (password: PGPASSWORD/PGPASSFILE, not the URL)
    #[arg(long, env = "INITGUARD_SQL_TARGET")]
    pub sql_target: Option<String>,

    /// The command and its arguments, after `--`
    #[arg(last = true, required_unless_present_any = ["sql", "sql_inline"], num_args = 1..)]
    pub command: Vec<String>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum OnInterruptedArg {
    Rerun,
    Fail,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Only this task (its name, as given to run --key)
    pub key: Option<String>,
    /// JSON array of records instead of a table
    #[arg(long)]
    pub json: bool,
    /// Merged into `Cli::store` by `parse`; read from there.
    #[command(flatten)]
    pub store: StoreArgs,
}

#[derive(Debug, Args)]
pub struct HistoryArgs {
    /// The task whose runs to show (its name, as given to run --key)
    pub key: String,
    /// JSON instead of a table
    #[arg(long)]
    pub json: bool,
    /// Merged into `Cli::store` by `parse`; read from there.
    #[command(flatten)]
    pub store: StoreArgs,
}

#[derive(Debug, Args)]
pub struct ResetArgs {
    /// The task to forget (its name, as given to run --key), in every scope instance
    pub key: String,
    /// How long to wait for a running holder's lease, up to 365d; 0: do not wait; "forever": no
    /// limit
    #[arg(
        long,
        env = "INITGUARD_WAIT_TIMEOUT",
        default_value = "1m",
        allow_hyphen_values = true
    )]
    pub wait_timeout: String,
    /// The --sql-target database of an SQL task: its completion rows there are deleted too, so
    /// that the next run runs the SQL again (required for such tasks)
    #[arg(long, env = "INITGUARD_SQL_TARGET")]
    pub sql_target: Option<String>,
    /// Merged into `Cli::store` by `parse`; read from there.
    #[command(flatten)]
    pub store: StoreArgs,
}

#[derive(Debug, Args)]
pub struct ReleaseArgs {
    /// The task whose lease to free (its name, as given to run --key)
    pub key: String,
    /// Scope of the lease to release
    #[arg(long, env = "INITGUARD_SCOPE", default_value = "global")]
    pub scope: String,
    /// Merged into `Cli::store` by `parse`; read from there.
    #[command(flatten)]
    pub store: StoreArgs,
}

/// `initguard verify`. The flags shared with `run` (key, inputs, grace, timeout) mean the same and
/// read the same variables; the key and inputs only shape the command's `INITGUARD_*` variables.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// Shell command whose stdout describes the state (a schema dump, a query, a listing)
    #[arg(long)]
    pub probe: Option<String>,

    /// Directory whose tree describes the state: paths, types, modes, owners, sizes, content
    /// digests (not times)
    #[arg(long)]
    pub probe_dir: Option<PathBuf>,

    /// Regex whose matches in the probe's output do not count, e.g. timestamps (repeatable)
    #[arg(long = "ignore", value_name = "REGEX")]
    pub ignore: Vec<String>,

    /// Shell command that brings the state back to the start before each scenario; without it
    /// only the rerun scenario runs
    #[arg(long)]
    pub reset: Option<String>,

    /// Copies started at once in the concurrent scenario
    #[arg(long, default_value_t = 2)]
    pub copies: usize,

    /// Points spread over the clean run's duration at which to cut a run short (0: none)
    #[arg(long, default_value_t = 5)]
    pub kill_points: usize,

    /// Time between SIGTERM and SIGKILL in the sigterm scenario, as in run
    #[arg(long, env = "INITGUARD_GRACE", default_value = "10s")]
    pub grace: String,

    /// Kill any one run of the command after this long
    #[arg(long, env = "INITGUARD_TIMEOUT")]
    pub timeout: Option<String>,

    /// Save every probe output, every full diff and report.json in this directory
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,

    /// The report as JSON on stdout instead of the table
    #[arg(long)]
    pub json: bool,

    /// INITGUARD_KEY for the command. No variable: INITGUARD_KEY is what initguard gives the
    /// commands it runs, never its own configuration
    #[arg(long, default_value = "verify")]
    pub key: String,

    /// As in run: part of the command's INITGUARD_FINGERPRINT (repeatable)
    #[arg(long = "input", env = "INITGUARD_INPUT", value_delimiter = ',')]
    pub inputs: Vec<PathBuf>,

    /// The command and its arguments, after `--`
    #[arg(last = true, required = true, num_args = 1..)]
    pub command: Vec<String>,
}

#[derive(Debug, Args)]
pub struct WaitArgs {
    #[command(flatten)]
    pub task: TaskArgs,

    /// Merged into `Cli::store` by `parse`; read from there.
    #[command(flatten)]
    pub store: StoreArgs,

    #[command(flatten)]
    pub fingerprint: FingerprintArgs,

    /// The SQL file of an SQL task, for its fingerprint (it is read, never run)
    #[arg(long, env = "INITGUARD_SQL", conflicts_with = "sql_inline")]
    pub sql: Option<PathBuf>,

    /// The SQL text of an SQL task, for its fingerprint (never run)
    #[arg(long, env = "INITGUARD_SQL_INLINE")]
    pub sql_inline: Option<String>,

    /// The SQL task's --sql-target, for its fingerprint (never connected to)
    #[arg(long, env = "INITGUARD_SQL_TARGET")]
    pub sql_target: Option<String>,

    /// Any success will do, whatever its fingerprint
    #[arg(long, conflicts_with_all = ["sql", "sql_inline"])]
    pub any: bool,

    /// How long to wait for the task's success (`forever`: no limit; 0: look once)
    #[arg(
        long,
        env = "INITGUARD_WAIT_TIMEOUT",
        default_value = "1h",
        allow_hyphen_values = true
    )]
    pub wait_timeout: String,

    /// The task's command, after `--`, exactly as `run` is given it (for its fingerprint)
    #[arg(last = true, num_args = 1..)]
    pub command: Vec<String>,
}
