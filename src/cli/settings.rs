//! Validation of parsed flags into library values: durations, key, scope, store URL. Errors here
//! are usage (exit 2) or configuration (exit 78) problems, found before anything is touched.

use super::args::{LeaseArgs, OnInterruptedArg, RunArgs, TaskArgs};
use super::limits::{MAX_DURATION, MAX_DURATION_TEXT, MIN_LOCK_TTL};
use crate::fingerprint::{self, Fingerprint, FingerprintError, Sources};
use crate::guard::{OnInterrupted, Plan};
use crate::runner::ChildSpec;
use crate::store::{AcquireOpts, SqlTask, StoreUrl, default_store_url};
use crate::task::{Holder, Key, Scope, TaskError, TaskId};
use std::path::Path;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("{flag}: {why}")]
    Usage { flag: &'static str, why: String },
    #[error(transparent)]
    Task(#[from] TaskError),
    #[error(transparent)]
    Url(#[from] crate::store::StoreUrlError),
    #[error(transparent)]
    Fingerprint(#[from] FingerprintError),
    /// The SQL of a task would end or start initguard's transaction (`COMMIT`, `BEGIN`, …).
    #[error("{flag}: {source}")]
    TransactionControl {
        flag: &'static str,
        source: crate::sql::TransactionControl,
    },
}

/// A duration option: whole seconds or humantime (`30s`, `5m`, `1h30m`), at most `MAX_DURATION`.
pub fn duration(flag: &'static str, raw: &str) -> Result<Duration, SettingsError> {
    let raw = raw.trim();
    let parsed = match raw.parse::<u64>() {
        Ok(secs) => Ok(Duration::from_secs(secs)),
        Err(_) => humantime::parse_duration(raw),
    };
    let d = parsed.map_err(|e| SettingsError::Usage {
        flag,
        why: format!(
            "{raw:?} is not a duration: expected one like 30s, 5m or 1h30m, at most \
             {MAX_DURATION_TEXT} ({e})"
        ),
    })?;
    if d > MAX_DURATION {
        return Err(SettingsError::Usage {
            flag,
            why: format!("{raw:?} is out of range: expected at most {MAX_DURATION_TEXT}"),
        });
    }
    Ok(d)
}

/// `--wait-timeout`: `forever` is no limit (`None`); `0` (however spelt) is "do not wait".
pub fn wait_timeout(raw: &str) -> Result<Option<Duration>, SettingsError> {
    match raw.trim() {
        "forever" => Ok(None),
        other => duration("--wait-timeout", other).map(Some),
    }
}

/// The variables that configure initguard's store and may carry its credentials: removed from
/// the command's environment unless `--pass-store-env`.
pub const STORE_ENV: &[&str] = &[
    "INITGUARD_STORE",
    "INITGUARD_STORE_PASSWORD_FILE",
    "INITGUARD_SQL_TARGET",
    // zookeeper:// digest credentials (listed whatever the build: they are still secrets).
    "INITGUARD_ZK_AUTH",
    "INITGUARD_ZK_AUTH_FILE",
    // etcd store (issue 11): its user and TLS files.
    "INITGUARD_ETCD_USER",
    "INITGUARD_ETCD_CA_FILE",
    "INITGUARD_ETCD_CERT_FILE",
    "INITGUARD_ETCD_KEY_FILE",
];

/// Refuse a run nested inside a run of the same key: it would wait on its own parent's lease
/// until `--wait-timeout`. `INITGUARD_KEY` and `INITGUARD_FENCING_TOKEN` are what initguard
/// gives its command, so together they mean "inside a run of that key".
pub fn check_not_nested(id: &TaskId) -> Result<(), SettingsError> {
    let parent = std::env::var("INITGUARD_KEY").ok();
    let inside_run = std::env::var_os("INITGUARD_FENCING_TOKEN").is_some();
    match parent {
        Some(parent) if inside_run && parent == id.key.as_str() => Err(SettingsError::Usage {
            flag: "--key",
            why: format!(
                "this run of {parent} is nested inside a run of the same key (INITGUARD_KEY) \
                 and would wait for its own parent's lease; give the nested run its own --key"
            ),
        }),
        _ => Ok(()),
    }
}

/// `--store` and `--kube-context` as given; parsed only by subcommands that open the store.
#[derive(Debug, Clone, Copy)]
pub struct StoreChoice<'a> {
    pub raw: Option<&'a str>,
    pub kube_context: Option<&'a str>,
    /// `--store-password-file`, for postgres:// and etcd:// stores.
    #[cfg_attr(not(any(feature = "postgres", feature = "etcd")), allow(dead_code))]
    pub password_file: Option<&'a Path>,
    /// `--pg-schema`, for postgres:// stores.
    pub pg_schema: Option<&'a str>,
}

pub fn store_url(choice: &StoreChoice) -> Result<StoreUrl, SettingsError> {
    let url = StoreUrl::parse(choice.raw.unwrap_or(default_store_url()))?;
    let url = url.with_kube_context(choice.kube_context.map(str::to_string));
    match url {
        #[cfg(feature = "postgres")]
        StoreUrl::Postgres(mut pg) => {
            if let Some(file) = choice.password_file {
                pg.password_file = Some(file.to_path_buf());
            }
            if let Some(schema) = choice.pg_schema {
                pg = pg.with_schema(schema).map_err(|e| SettingsError::Usage {
                    flag: "--pg-schema",
                    why: e.to_string(),
                })?;
            }
            Ok(StoreUrl::Postgres(pg))
        }
        // etcd store (issue 11): credentials from the environment, never the command line.
        #[cfg(feature = "etcd")]
        StoreUrl::Etcd(etcd) if choice.pg_schema.is_none() => Ok(StoreUrl::Etcd(
            etcd.with_credentials_from_env(choice.password_file.map(Path::to_path_buf)),
        )),
        other => {
            if choice.pg_schema.is_some() {
                return Err(SettingsError::Usage {
                    flag: "--pg-schema",
                    why: format!(
                        "only applies to a postgres:// store, not {}",
                        other.redacted()
                    ),
                });
            }
            Ok(other)
        }
    }
}

pub fn task_id(args: &TaskArgs) -> Result<TaskId, SettingsError> {
    task_id_of(&args.key, &args.scope)
}

pub fn task_id_of(key: &str, scope: &str) -> Result<TaskId, SettingsError> {
    let key = Key::parse(key)?;
    let scope = Scope::parse(scope).ok_or_else(|| SettingsError::Usage {
        flag: "--scope",
        why: format!("{scope:?} is not one of global, pod, node"),
    })?;
    Ok(TaskId {
        key,
        scope,
        instance: scope.instance_from_env()?,
    })
}

/// `sql` is the task `sql_task` read, passed in so that the file is read once: the text that is
/// fingerprinted is the text that runs.
pub fn fingerprint(args: &RunArgs, sql: Option<&SqlTask>) -> Result<Fingerprint, SettingsError> {
    let extra = match sql {
        Some(task) => sql_sources(
            args.sql.as_deref(),
            task.sql.clone().into_bytes(),
            task.target.as_deref(),
        ),
        None => Vec::new(),
    };
    Ok(fingerprint::compute(&Sources {
        argv: args.command.clone(),
        inputs: args.fingerprint.inputs.clone(),
        input_env: args.fingerprint.input_env.clone(),
        version: args.fingerprint.version.clone(),
        extra,
    })?)
}

/// What `initguard wait` waits for: the task, and the fingerprint its success must carry
/// (`None`: any, with `--any`). Computed exactly as `run` computes it from the same options.
pub fn wait_plan(args: &super::args::WaitArgs) -> Result<crate::wait::WaitPlan, SettingsError> {
    let id = task_id(&args.task)?;
    let timeout = wait_timeout(&args.wait_timeout)?;
    let fingerprint = if args.any {
        None
    } else {
        if args.command.is_empty() && args.sql.is_none() && args.sql_inline.is_none() {
            return Err(SettingsError::Usage {
                flag: "wait",
                why:
                    "needs the task's command after `--` (as given to `run`), --sql/--sql-inline, \
                      or --any"
                        .into(),
            });
        }
        let text = match (&args.sql, &args.sql_inline) {
            (Some(path), _) => Some(std::fs::read(path).map_err(|e| SettingsError::Usage {
                flag: "--sql",
                why: format!("cannot read {}: {e}", path.display()),
            })?),
            (None, Some(text)) => Some(text.clone().into_bytes()),
            (None, None) => None,
        };
        // Read as `run` reads it (empty is none, checked), or the waiter would wait for a
        // fingerprint no run computes.
        let target = sql_target(args.sql_target.as_deref())?;
        let extra = match text {
            Some(text) => sql_sources(args.sql.as_deref(), text, target.as_deref()),
            None => Vec::new(),
        };
        Some(
            fingerprint::compute(&Sources {
                argv: args.command.clone(),
                inputs: args.fingerprint.inputs.clone(),
                input_env: args.fingerprint.input_env.clone(),
                version: args.fingerprint.version.clone(),
                extra,
            })?
            .value,
        )
    };
    Ok(crate::wait::WaitPlan {
        id,
        fingerprint,
        timeout,
    })
}

/// What an SQL task adds to its fingerprint, one function for `run` and `wait`: the SQL under
/// the flag that gave it, and its target in the redacted form (rotating the target's password is
/// not a change of the task).
fn sql_sources(
    file: Option<&std::path::Path>,
    text: Vec<u8>,
    target: Option<&str>,
) -> Vec<(String, Vec<u8>)> {
    let label = match file {
        Some(path) => format!("--sql {}", path.display()),
        None => "--sql-inline".to_string(),
    };
    let mut extra = vec![(label, text)];
    if let Some(target) = target {
        extra.push((
            "--sql-target".to_string(),
            target_label(target).into_bytes(),
        ));
    }
    extra
}

/// The SQL task `--sql`/`--sql-inline`/`--sql-target` describe, if any.
pub fn sql_task(args: &RunArgs) -> Result<Option<SqlTask>, SettingsError> {
    let sql = match (&args.sql, &args.sql_inline) {
        (Some(path), _) => std::fs::read_to_string(path).map_err(|e| SettingsError::Usage {
            flag: "--sql",
            why: format!("cannot read {}: {e}", path.display()),
        })?,
        (None, Some(text)) => text.clone(),
        (None, None) => {
            // Empty is none, as everywhere: a manifest may set the variable for every task.
            if sql_target(args.sql_target.as_deref())?.is_some() {
                return Err(SettingsError::Usage {
                    flag: "--sql-target",
                    why: "needs --sql FILE or --sql-inline SQL".into(),
                });
            }
            return Ok(None);
        }
    };
    let flag = if args.sql.is_some() {
        "--sql"
    } else {
        "--sql-inline"
    };
    if sql.trim().is_empty() {
        return Err(SettingsError::Usage {
            flag,
            why: "the SQL is empty".into(),
        });
    }
    // The one thing the client library cannot send: refused here, not mistaken later for a
    // store that does not answer.
    if let Some((line, column)) = crate::store::sql::nul_line_col(&sql) {
        return Err(SettingsError::Usage {
            flag,
            why: format!(
                "the SQL has a NUL byte (line {line}, column {column}), which PostgreSQL does not accept; remove it"
            ),
        });
    }
    // Before anything is sent: a COMMIT inside the task's transaction would commit its effect
    // without the completion record, and the task would run (and commit) again on every retry.
    crate::sql::check_no_transaction_control(&sql)
        .map_err(|source| SettingsError::TransactionControl { flag, source })?;
    let target = sql_target(args.sql_target.as_deref())?;
    Ok(Some(SqlTask { sql, target }))
}

/// `--sql-target URL` (of `run` and `reset`), checked to be a postgres:// URL; empty is none.
pub fn sql_target(raw: Option<&str>) -> Result<Option<String>, SettingsError> {
    let Some(t) = raw.filter(|t| !t.trim().is_empty()) else {
        return Ok(None);
    };
    match StoreUrl::parse(t) {
        #[cfg(feature = "postgres")]
        Ok(StoreUrl::Postgres(_)) => Ok(Some(t.to_string())),
        Ok(_) | Err(_) => Err(SettingsError::Usage {
            flag: "--sql-target",
            why: format!("{} is not a valid postgres:// URL", target_label(t)),
        }),
    }
}

fn target_label(raw: &str) -> String {
    StoreUrl::parse(raw)
        .map(|u| u.redacted())
        .unwrap_or_else(|_| "the URL".to_string())
}

/// `--lock-ttl` and `--wait-timeout`, checked (for `run` and `steps apply`).
/// `--timeout D` of `run` and `verify`: a limit on one run of the command, more than 0 (leaving
/// it out means no limit).
pub fn command_timeout(arg: Option<&str>) -> Result<Option<Duration>, SettingsError> {
    let timeout = arg.map(|t| duration("--timeout", t)).transpose()?;
    if timeout.is_some_and(|t| t.is_zero()) {
        return Err(SettingsError::Usage {
            flag: "--timeout",
            why: format!(
                "0 is out of range: expected more than 0 and at most {MAX_DURATION_TEXT} (leave \
                 --timeout out for no limit)"
            ),
        });
    }
    Ok(timeout)
}

pub fn acquire_opts(args: &LeaseArgs) -> Result<AcquireOpts, SettingsError> {
    Ok(AcquireOpts {
        ttl: lock_ttl(&args.lock_ttl)?,
        wait_timeout: wait_timeout(&args.wait_timeout)?,
    })
}

/// `--lock-ttl`: a duration of at least `MIN_LOCK_TTL`.
fn lock_ttl(raw: &str) -> Result<Duration, SettingsError> {
    let ttl = duration("--lock-ttl", raw)?;
    if ttl < MIN_LOCK_TTL {
        return Err(SettingsError::Usage {
            flag: "--lock-ttl",
            why: format!(
                "{:?} is out of range: expected at least 1s and at most {MAX_DURATION_TEXT}",
                raw.trim()
            ),
        });
    }
    Ok(ttl)
}

pub fn plan(
    args: &RunArgs,
    id: TaskId,
    fingerprint: String,
    sql: Option<SqlTask>,
) -> Result<Plan, SettingsError> {
    let acquire = acquire_opts(&args.lease)?;
    let timeout = command_timeout(args.timeout.as_deref())?;
    let env_remove = if args.pass_store_env {
        Vec::new()
    } else {
        STORE_ENV.iter().map(|v| v.to_string()).collect()
    };
    Ok(Plan {
        id,
        fingerprint,
        holder: Holder::from_env(),
        acquire,
        retries: args.retries,
        backoff: duration("--backoff", &args.backoff)?,
        max_attempts: args.max_attempts,
        on_interrupted: match args.on_interrupted {
            OnInterruptedArg::Rerun => OnInterrupted::Rerun,
            OnInterruptedArg::Fail => OnInterrupted::Fail,
        },
        done_if: args.done_if.clone().filter(|d| !d.trim().is_empty()),
        child: ChildSpec {
            argv: args.command.clone(),
            env: Vec::new(),
            env_remove,
            timeout,
            grace: duration("--grace", &args.grace)?,
            capture: !args.no_capture,
            tail_bytes: args.tail_bytes,
        },
        // clap keeps it in 1..=MAX_HISTORY.
        history: args.history,
        sql,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_accept_seconds_and_humantime() {
        assert_eq!(duration("--x", "30").unwrap(), Duration::from_secs(30));
        assert_eq!(duration("--x", "1m30s").unwrap(), Duration::from_secs(90));
        assert_eq!(
            duration("--x", "250ms").unwrap(),
            Duration::from_millis(250)
        );
        let e = duration("--x", "soon").unwrap_err().to_string();
        assert!(e.starts_with("--x: \"soon\" is not a duration"), "{e}");
    }
}
