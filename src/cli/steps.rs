//! `initguard steps apply|status|validate|repair DIR`: flags into settings, then the library
//! (`steps::run`, `steps::validate`, `steps::status`, the target database). Tables go to stdout
//! for `status`, `validate`, `repair` and `--dry-run`; `apply` leaves stdout to its script steps.

use super::args::{
    AdoptArg, OnInterruptedArg, StepsAllowArgs, StepsApplyArgs, StepsCommand, StepsRepairArgs,
    StepsSetArgs, StepsStatusArgs, StepsValidateArgs,
};
use super::failure::Failure;
use super::settings::{self, SettingsError, StoreChoice};
use crate::acquire::{Acquired, acquire};
use crate::guard::{OnInterrupted, Plan};
use crate::runner::{ChildSpec, Signals};
use crate::steps::run::{self as steps_run, ApplyOptions, StepsError, TargetUrl};
use crate::steps::{Allow, Applied, Problem, StepSet, discover, status, validate};
use crate::store::{self, AcquireOpts, Store, StoreUrl};
use crate::task::{Holder, Key, Scope, TaskId};
use std::io::Write;
use std::path::Path;
use std::time::Duration;
use tracing::info;

/// Variables of initguard's own environment a script step must not inherit: the store's and the
/// target database's settings, which may carry credentials.
pub const STEPS_ENV: &[&str] = &[
    "INITGUARD_STEPS_TARGET",
    "INITGUARD_STEPS_TARGET_PASSWORD_FILE",
];

pub async fn steps(
    url: &StoreChoice<'_>,
    cmd: StepsCommand,
    signals: &mut Signals,
) -> Result<u8, Failure> {
    match cmd {
        StepsCommand::Apply(args) => apply(url, *args, signals).await,
        StepsCommand::Status(args) => {
            super::entry::interruptible(signals, "reading the history", status(url, args)).await
        }
        StepsCommand::Validate(args) => {
            super::entry::interruptible(signals, "reading the history", validate(url, args)).await
        }
        StepsCommand::Repair(args) => {
            let during = "repairing the history; a lease it held lapses on its own".to_string();
            super::entry::interruptible(signals, during, repair(url, args)).await
        }
    }
}

/// The set, validated: its directory read, its key and target resolved. Nothing contacted.
struct Set {
    id: TaskId,
    steps: StepSet,
    target: Option<TargetUrl>,
    store: StoreUrl,
    dir_label: String,
}

fn usage(flag: &'static str, why: impl Into<String>) -> SettingsError {
    SettingsError::Usage {
        flag,
        why: why.into(),
    }
}

/// A set's settings: its key and target resolved, its directory not read yet. Nothing contacted.
struct Settings {
    id: TaskId,
    target: Option<TargetUrl>,
    store: StoreUrl,
    dir_label: String,
}

impl Settings {
    fn with(self, steps: StepSet) -> Set {
        Set {
            id: self.id,
            steps,
            target: self.target,
            store: self.store,
            dir_label: self.dir_label,
        }
    }
}

fn resolve(url: &StoreChoice<'_>, args: &StepsSetArgs) -> Result<Set, Failure> {
    let settings = resolve_settings(url, args)?;
    let steps = discover::discover(&args.dir).map_err(StepsError::from)?;
    Ok(settings.with(steps))
}

fn resolve_settings(url: &StoreChoice<'_>, args: &StepsSetArgs) -> Result<Settings, Failure> {
    let key = match &args.key {
        Some(k) => Key::parse(k).map_err(SettingsError::from)?,
        None => default_key(&args.dir)?,
    };
    let id = TaskId {
        key,
        scope: Scope::Global,
        instance: None,
    };
    settings::check_not_nested(&id)?;
    let store = settings::store_url(url)?;
    let target = target_url(args, &store)?;
    Ok(Settings {
        id,
        target,
        store,
        dir_label: args.dir.display().to_string(),
    })
}

/// Opens DIR here (so that a missing or unreadable DIR is reported before anything is
/// contacted), then lists it, reads and hashes its files on a blocking thread and runs `then` on
/// the set there too, so that the caller can connect to the store and the target meanwhile.
fn start_discovery<R: Send + 'static>(
    dir: &Path,
    then: impl FnOnce(StepSet) -> R + Send + 'static,
) -> Result<Discovery<R>, Failure> {
    let open = discover::open_dir(dir).map_err(StepsError::from)?;
    Ok(tokio::task::spawn_blocking(move || {
        open.list().map(|listing| then(listing.inspect()))
    }))
}

type Discovery<R> = tokio::task::JoinHandle<Result<R, discover::DiscoverError>>;

async fn joined<R>(discovery: Discovery<R>) -> Result<R, Failure> {
    match discovery.await {
        Ok(found) => Ok(found.map_err(StepsError::from)?),
        Err(e) => match e.try_into_panic() {
            Ok(panic) => std::panic::resume_unwind(panic),
            Err(e) => Err(Failure::Runtime(std::io::Error::other(e))),
        },
    }
}

/// Discovery (started) and `other` (which contacts the store or the target) at once.
async fn with_discovery<R, T>(
    discovery: Discovery<R>,
    other: impl std::future::Future<Output = Result<T, Failure>>,
) -> Result<(R, T), Failure> {
    let (found, got) = tokio::join!(joined(discovery), other);
    Ok((found?, got?))
}

/// `steps-<DIR's base name>`, with every character a key does not allow replaced by `-`.
fn default_key(dir: &Path) -> Result<Key, SettingsError> {
    let named = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    let base = named
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut key = String::from("steps-");
    for c in base.chars() {
        let c = if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
            c
        } else {
            '-'
        };
        // No "..": a key must not hold one.
        if c == '.' && key.ends_with('.') {
            key.push('-');
        }
        key.push(c);
    }
    let key: String = key.chars().take(crate::task::MAX_KEY_LEN).collect();
    Key::parse(key.trim_end_matches('/')).map_err(|e| {
        usage(
            "--key",
            format!("no default key can be made from DIR ({e}); give --key"),
        )
    })
}

/// `--target`, else the store's database when the store is postgres://.
fn target_url(args: &StepsSetArgs, store: &StoreUrl) -> Result<Option<TargetUrl>, SettingsError> {
    let raw = args.target.as_deref().filter(|t| !t.trim().is_empty());
    #[cfg(feature = "postgres")]
    {
        let mut pg = match raw {
            Some(t) => match StoreUrl::parse(t) {
                Ok(StoreUrl::Postgres(pg)) => pg,
                // Never quoted: a URL that did not parse may hold a password anywhere.
                Err(crate::store::StoreUrlError::Invalid { url, why }) => {
                    return Err(usage("--target", format!("{url} is invalid: {why}")));
                }
                Ok(_) | Err(_) => {
                    return Err(usage(
                        "--target",
                        "expected a postgres://[USER@]HOST[:PORT]/DATABASE URL: SQL steps run \
                         in PostgreSQL",
                    ));
                }
            },
            None => match store {
                StoreUrl::Postgres(pg) => pg.clone(),
                _ => {
                    if args.target_password_file.is_some() {
                        return Err(usage(
                            "--target-password-file",
                            "needs a target database (--target, or a postgres:// store)",
                        ));
                    }
                    return Ok(None);
                }
            },
        };
        if let Some(file) = &args.target_password_file {
            pg.password_file = Some(file.clone());
        }
        Ok(Some(pg))
    }
    #[cfg(not(feature = "postgres"))]
    {
        let _ = store;
        match raw {
            Some(_) => Err(usage(
                "--target",
                "needs the postgres backend, which this build leaves out",
            )),
            None => Ok(None),
        }
    }
}

#[cfg(feature = "postgres")]
fn target_label(t: &TargetUrl) -> String {
    t.redacted()
}
#[cfg(not(feature = "postgres"))]
fn target_label(t: &TargetUrl) -> String {
    match *t {}
}

fn allow(a: &StepsAllowArgs) -> Allow {
    Allow {
        changed: a.allow_changed,
        missing: a.allow_missing,
        out_of_order: a.out_of_order,
    }
}

/// Refuse a set with SQL steps and nowhere to run them, before anything is contacted.
fn check_target(set: &Settings, steps: &StepSet) -> Result<(), StepsError> {
    if set.target.is_none()
        && let Some(first) = steps
            .steps
            .iter()
            .find(|s| s.kind == crate::steps::Kind::Sql)
    {
        return Err(StepsError::NeedsTarget {
            key: set.id.to_string(),
            first: first.file.clone(),
        });
    }
    Ok(())
}

async fn open(url: &StoreUrl) -> Result<Box<dyn Store>, Failure> {
    let store = store::open(url).await?;
    opened(url, store.as_ref());
    Ok(store)
}

/// `open`, and `id`'s record read as the store is opened (`store::open_reading`).
async fn open_reading(
    url: &StoreUrl,
    id: &TaskId,
) -> Result<(Box<dyn Store>, crate::guard::EarlyRead), Failure> {
    let (store, early) = store::open_reading(url, id).await?;
    opened(url, store.as_ref());
    Ok((store, early))
}

fn opened(url: &StoreUrl, store: &dyn Store) {
    info!(store = %url.redacted(), "store {}", store.describe());
}

fn adopt_tool(a: Option<AdoptArg>) -> Option<steps_run::Tool> {
    #[cfg(feature = "postgres")]
    {
        use steps_run::Tool;
        a.map(|a| match a {
            AdoptArg::Flyway => Tool::Flyway,
            AdoptArg::GolangMigrate => Tool::GolangMigrate,
            AdoptArg::Sqlx => Tool::Sqlx,
            AdoptArg::Dbmate => Tool::Dbmate,
        })
    }
    #[cfg(not(feature = "postgres"))]
    {
        let _ = a;
        None
    }
}

async fn apply(
    url: &StoreChoice<'_>,
    args: StepsApplyArgs,
    signals: &mut Signals,
) -> Result<u8, Failure> {
    let resolved = resolve_settings(url, &args.set)?;
    // DIR is opened here; it is listed and its files are read and hashed (and the fingerprint
    // made) on another thread while the rest is checked, the store opened and the record read.
    let label = resolved.target.as_ref().map(target_label);
    let discovery = start_discovery(&args.set.dir, move |steps| {
        let fp = steps_run::fingerprint(&steps, label.as_deref());
        (steps, fp)
    })?;
    if args.adopt.is_some() && resolved.target.is_none() {
        return Err(usage(
            "--adopt",
            "needs a target database (--target URL, or a postgres:// store): adoption reads \
             the tool's history table there",
        )
        .into());
    }
    let acquire = settings::acquire_opts(&args.lease)?;
    let ttl = acquire.ttl;
    let grace = settings::duration("--grace", &args.grace)?;
    let opening = "opening the store; nothing was applied";
    let ((steps, fp), (store, early)) = if args.dry_run || resolved.target.is_none() {
        // Without a target an SQL step is refused before the store is opened (so discovery
        // comes first); a dry run opens no store of its own here.
        let (steps, fp) = joined(discovery).await?;
        check_target(&resolved, &steps)?;
        if args.dry_run {
            return dry_run(&resolved.with(steps), allow(&args.allow)).await;
        }
        let store = super::entry::interruptible(signals, opening, open(&resolved.store)).await?;
        ((steps, fp), (store, None))
    } else {
        // The record is read while discovery goes on: the skip of a set with nothing new then
        // waits for the slower of the two, not for both one after the other.
        let open_and_read = async {
            let (store, early) = open_reading(&resolved.store, &resolved.id).await?;
            Ok((store, Some(early)))
        };
        super::entry::interruptible(signals, opening, with_discovery(discovery, open_and_read))
            .await?
    };
    let set = resolved.with(steps);
    let env_remove: Vec<String> = settings::STORE_ENV
        .iter()
        .chain(STEPS_ENV)
        .map(|v| v.to_string())
        .collect();
    let script = ChildSpec {
        argv: Vec::new(),
        env: Vec::new(),
        env_remove,
        timeout: None,
        grace,
        capture: args.tail_bytes > 0,
        tail_bytes: args.tail_bytes,
    };
    let plan = Plan {
        id: set.id.clone(),
        fingerprint: fp.value.clone(),
        holder: Holder::from_env(),
        acquire,
        // A failed step is fixed by a person, not by trying again at once.
        retries: 0,
        backoff: Duration::ZERO,
        max_attempts: 0,
        // An interrupted apply is resumed step by step; `--on-interrupted` judges script steps.
        on_interrupted: OnInterrupted::Rerun,
        done_if: None,
        child: script.clone(),
        history: args.history,
        sql: None,
    };
    let opts = ApplyOptions {
        set_name: set.id.key.to_string(),
        allow: allow(&args.allow),
        on_interrupted: match args.on_interrupted {
            OnInterruptedArg::Rerun => OnInterrupted::Rerun,
            OnInterruptedArg::Fail => OnInterrupted::Fail,
        },
        adopt: adopt_tool(args.adopt),
        target: set.target.clone(),
        lease_ttl: ttl,
        script,
        dir_label: set.dir_label.clone(),
    };
    info!(key = %plan.id, fingerprint = %plan.fingerprint, "steps {} ({} step{}), fingerprint {}", plan.id, set.steps.steps.len(), if set.steps.steps.len() == 1 { "" } else { "s" }, plan.fingerprint);
    match steps_run::apply(store.as_ref(), &plan, set.steps, opts, early, signals).await {
        Ok(done) => {
            if let crate::guard::Outcome::Succeeded { .. } = done.outcome {
                info!(key = %plan.id, "applied {} step{} of {}", done.applied, if done.applied == 1 { "" } else { "s" }, plan.id);
            }
            Ok(done.outcome.exit_code())
        }
        Err(e) => {
            if let Some(problems) = problems_of(&e) {
                let _ = write!(std::io::stderr(), "{}", validate::problem_table(problems));
            }
            Err(e.into())
        }
    }
}

/// The problems an apply was refused for, to show as a table above the error line.
fn problems_of(e: &StepsError) -> Option<&[Problem]> {
    match e {
        StepsError::Invalid { problems, .. } => Some(problems),
        #[cfg(feature = "postgres")]
        StepsError::Target {
            source: crate::steps::target::TargetError::Untrusted { problems, .. },
            ..
        } => Some(problems),
        _ => None,
    }
}

/// What `status`, `validate` and `--dry-run` read, read only: the set's history (the target
/// database's when there is one, else the record's; script steps applied before the set had a
/// target count too, see `run::merged`) and, when asked, the target's INVALID indexes.
struct Read {
    history: Vec<Applied>,
    invalid_indexes: Vec<Problem>,
}

/// Reads the record and the target at once, the target over one connection. The store's error
/// is reported before the target's.
async fn read(
    id: &TaskId,
    store: &StoreUrl,
    target: Option<&TargetUrl>,
    indexes: bool,
) -> Result<Read, Failure> {
    // With a PostgreSQL store a set always has a target (the store's database unless --target
    // names another), and a record holds step history only for a set without one (`run`'s
    // script steps): when the target is the store's database, the target is all there is to
    // read, over one connection instead of two.
    #[cfg(feature = "postgres")]
    if let (StoreUrl::Postgres(pg), Some(t)) = (store, target)
        && pg == t
    {
        let (history, invalid_indexes) =
            read_target(id, target, indexes).await?.unwrap_or_default();
        return Ok(Read {
            history,
            invalid_indexes,
        });
    }
    let recorded = async {
        let record = store::read_only(store, id).await?;
        Ok::<_, Failure>(record.map(|r| r.steps).unwrap_or_default())
    };
    let (recorded, target) = tokio::join!(recorded, read_target(id, target, indexes));
    let recorded = recorded?;
    Ok(match target? {
        Some((history, invalid_indexes)) => Read {
            history: steps_run::merged(history, &recorded),
            invalid_indexes,
        },
        None => Read {
            history: recorded,
            invalid_indexes: Vec::new(),
        },
    })
}

/// The target's history and (when asked) its INVALID indexes, over one connection; `None`
/// without a target.
#[cfg(feature = "postgres")]
async fn read_target(
    id: &TaskId,
    target: Option<&TargetUrl>,
    indexes: bool,
) -> Result<Option<(Vec<Applied>, Vec<Problem>)>, Failure> {
    let Some(t) = target else {
        return Ok(None);
    };
    let db = crate::steps::target::Target::connect(t, &Default::default())
        .await
        .map_err(|e| steps_target_err(id, e))?;
    let found = if indexes {
        db.history_and_invalid_indexes(id.key.as_str()).await
    } else {
        db.history(id.key.as_str()).await.map(|h| (h, Vec::new()))
    };
    Ok(Some(found.map_err(|e| steps_target_err(id, e))?))
}
#[cfg(not(feature = "postgres"))]
async fn read_target(
    id: &TaskId,
    target: Option<&TargetUrl>,
    indexes: bool,
) -> Result<Option<(Vec<Applied>, Vec<Problem>)>, Failure> {
    let _ = (id, indexes);
    match target {
        Some(t) => match *t {},
        None => Ok(None),
    }
}

#[cfg(feature = "postgres")]
fn steps_target_err(id: &TaskId, e: crate::steps::target::TargetError) -> Failure {
    StepsError::Target {
        key: id.to_string(),
        source: e,
    }
    .into()
}

async fn dry_run(set: &Set, allow: Allow) -> Result<u8, Failure> {
    let history = read(&set.id, &set.store, set.target.as_ref(), false)
        .await?
        .history;
    let v = validate::check(&set.steps, &history, allow);
    let mut out = std::io::stdout();
    if !v.errors.is_empty() {
        let _ = write!(out, "{}", validate::problem_table(&v.errors));
        return Err(StepsError::Problems {
            key: set.id.to_string(),
            problems: v.errors,
        }
        .into());
    }
    if !v.warnings.is_empty() {
        let _ = write!(out, "{}", validate::problem_table(&v.warnings));
    }
    let _ = write!(out, "{}", plan_table(&v.plan));
    Ok(crate::exit::OK)
}

/// What `--dry-run` prints: the steps that would run, in order, and why each is in the plan.
fn plan_table(plan: &[crate::steps::Planned]) -> String {
    if plan.is_empty() {
        return "nothing to apply: every step is applied\n".into();
    }
    let mut rows = vec![vec![
        "#".to_string(),
        "Version".into(),
        "Description".into(),
        "Kind".into(),
        "File".into(),
        "Previous".into(),
    ]];
    for (i, p) in plan.iter().enumerate() {
        let previous = match p.previous {
            crate::steps::Previous::None => "none".to_string(),
            crate::steps::Previous::Failed => "failed".into(),
            crate::steps::Previous::Interrupted if p.resume_at > 0 => {
                format!("interrupted (resumes at statement {})", p.resume_at + 1)
            }
            crate::steps::Previous::Interrupted => "interrupted".into(),
            crate::steps::Previous::Changed => "changed".into(),
        };
        let version = match &p.step.id {
            crate::steps::StepId::Versioned(v) => v.text.clone(),
            crate::steps::StepId::Repeatable(_) => "R".into(),
        };
        rows.push(vec![
            (i + 1).to_string(),
            version,
            p.step.description.clone(),
            p.step.kind.to_string(),
            p.step.file.clone(),
            previous,
        ]);
    }
    super::report::table(rows)
}

async fn status(url: &StoreChoice<'_>, args: StepsStatusArgs) -> Result<u8, Failure> {
    let (set, read) = read_with_discovery(url, &args.set).await?;
    let history = read.history;
    let v = validate::check(&set.steps, &history, Allow::default());
    let mut problems: Vec<Problem> = v.errors;
    problems.extend(v.warnings);
    problems.extend(read.invalid_indexes);
    let rows = status::rows(&set.steps, &history);
    let mut out = std::io::stdout();
    if args.json {
        let _ = writeln!(
            out,
            "{}",
            serde_json::to_string_pretty(&status::json(&rows, &problems)).unwrap_or_default()
        );
    } else {
        let _ = write!(out, "{}", status::table(&rows));
        if !problems.is_empty() {
            let _ = writeln!(out);
            let _ = write!(out, "{}", validate::problem_table(&problems));
        }
    }
    Ok(crate::exit::OK)
}

/// `status`'s and `validate`'s reading: DIR read and hashed while the store and the target are
/// contacted (all three at once); DIR's errors first, then the store's, then the target's.
async fn read_with_discovery(
    url: &StoreChoice<'_>,
    args: &StepsSetArgs,
) -> Result<(Set, Read), Failure> {
    let resolved = resolve_settings(url, args)?;
    let discovery = start_discovery(&args.dir, |steps| steps)?;
    let (steps, read) = with_discovery(
        discovery,
        read(
            &resolved.id,
            &resolved.store,
            resolved.target.as_ref(),
            true,
        ),
    )
    .await?;
    Ok((resolved.with(steps), read))
}

async fn validate(url: &StoreChoice<'_>, args: StepsValidateArgs) -> Result<u8, Failure> {
    let (set, read) = read_with_discovery(url, &args.set).await?;
    let v = validate::check(&set.steps, &read.history, allow(&args.allow));
    // An INVALID index is a problem no --allow-* accepts: validate fails on it (for CI).
    let mut errors = v.errors;
    errors.extend(read.invalid_indexes);
    let mut shown = errors.clone();
    shown.extend(v.warnings.iter().cloned());
    let mut out = std::io::stdout();
    if shown.is_empty() {
        info!(key = %set.id, "{}: {} step{}, no problems", set.id, set.steps.steps.len(), if set.steps.steps.len() == 1 { "" } else { "s" });
        return Ok(crate::exit::OK);
    }
    let _ = write!(out, "{}", validate::problem_table(&shown));
    if errors.is_empty() {
        return Ok(crate::exit::OK);
    }
    Err(StepsError::Problems {
        key: set.id.to_string(),
        problems: errors,
    }
    .into())
}

async fn repair(url: &StoreChoice<'_>, args: StepsRepairArgs) -> Result<u8, Failure> {
    let set = resolve(url, &args.set)?;
    let wait_timeout = settings::wait_timeout(&args.wait_timeout)?;
    let store = open(&set.store).await?;
    let holder = Holder::from_env();
    let opts = AcquireOpts {
        ttl: Duration::from_secs(30),
        wait_timeout,
    };
    let lease = match acquire(store.as_ref(), &set.id, &holder, opts, None).await? {
        Acquired::Lease(lease) => lease,
        // Not asked for (no fingerprint to wait for).
        Acquired::DoneMeanwhile(_) => return Ok(crate::exit::OK),
    };
    let changes = repair_under(&set, store.as_ref(), &lease, &holder).await;
    let released = store.release(lease).await;
    let changes = changes?;
    if let Err(e) = released {
        tracing::warn!(key = %set.id, "could not release the lease (it lapses on its own): {e}");
    }
    let mut out = std::io::stdout();
    if changes.is_empty() {
        let _ = writeln!(out, "nothing to repair: the history matches the files");
    }
    for c in &changes {
        let _ = writeln!(out, "{c}");
    }
    Ok(crate::exit::OK)
}

async fn repair_under(
    set: &Set,
    store: &dyn Store,
    lease: &crate::store::Lease,
    holder: &Holder,
) -> Result<Vec<String>, Failure> {
    #[cfg(feature = "postgres")]
    if let Some(t) = &set.target {
        let target = crate::steps::target::Target::connect(t, &Default::default())
            .await
            .map_err(|e| steps_target_err(&set.id, e))?;
        let run = crate::steps::RunInfo {
            token: lease.token,
            holder: holder.identity(),
        };
        let name = set.id.key.as_str();
        target
            .begin(name, run.token, &run.holder)
            .await
            .map_err(|e| steps_target_err(&set.id, e))?;
        return target
            .repair(name, &set.steps, &run)
            .await
            .map_err(|e| steps_target_err(&set.id, e));
    }
    let _ = holder;
    let Some(mut rec) = store.read(&set.id).await? else {
        return Ok(Vec::new());
    };
    let changes = steps_run::repair_record(&set.steps, &mut rec);
    if !changes.is_empty() {
        rec.token = lease.token;
        rec.updated_at = chrono::Utc::now();
        store.write(lease, &rec).await?;
    }
    Ok(changes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_keys_are_valid_keys_made_from_the_base_name() {
        let key = |d: &str| default_key(Path::new(d)).map(|k| k.as_str().to_string());
        assert_eq!(key("/no/such/db/migrations").unwrap(), "steps-migrations");
        assert_eq!(
            key("/no/such/My Migrations!").unwrap(),
            "steps-My-Migrations-"
        );
        assert_eq!(key("/no/such/a..b").unwrap(), "steps-a.-.b");
        assert_eq!(key("/no/such/x/").unwrap(), "steps-x");
        let long = format!("/no/such/{}", "m".repeat(300));
        assert_eq!(key(&long).unwrap().len(), crate::task::MAX_KEY_LEN);
        assert_eq!(key("/").unwrap(), "steps-");
    }

    /// The set's fingerprint takes the target as `target_label` gives it: a password is no part
    /// of it (rotating one in the URL starts no re-apply), the database is.
    #[cfg(feature = "postgres")]
    #[test]
    fn the_target_in_the_fingerprint_has_no_password() {
        let label = |u: &str| match StoreUrl::parse(u) {
            Ok(StoreUrl::Postgres(pg)) => target_label(&pg),
            _ => panic!("{u} is a postgres URL"),
        };
        let first = label("postgres://app:first-pw@db:5432/app");
        assert_eq!(label("postgres://app:second-pw@db:5432/app"), first);
        assert!(!first.contains("pw"), "{first}");
        assert_ne!(label("postgres://app:first-pw@db:5432/other"), first);
    }
}
