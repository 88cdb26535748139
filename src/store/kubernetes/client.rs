//! Where the Kubernetes client comes from: an explicit kubeconfig (`KUBECONFIG`, a context picked
//! with `--kube-context` / `INITGUARD_KUBE_CONTEXT`), else the Pod's service account, else
//! `~/.kube/config`. Must never log or return credentials: only server URLs and context names.

use super::super::StoreError;
use kube::config::{KubeConfigOptions, Kubeconfig};
use std::path::Path;
use std::time::Duration;

/// A connected client, the namespace its Leases live in, and how it was configured (for logs).
pub(crate) struct Connection {
    pub client: kube::Client,
    pub namespace: String,
    pub source: String,
    /// The API server's URL, for "is it reachable?" hints.
    pub server: String,
}

const CONTEXT_ENV: &str = "INITGUARD_KUBE_CONTEXT";
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

fn config_error(reason: String) -> StoreError {
    StoreError::Config {
        store: "kubernetes:".into(),
        reason,
    }
}

fn non_empty(v: Option<String>) -> Option<String> {
    v.filter(|s| !s.trim().is_empty())
}

/// Connect the way the environment says. An explicitly set `KUBECONFIG` or context wins over the
/// service account: someone who sets one inside a Pod means it (and tests must never reach the
/// cluster they happen to run in).
pub(crate) async fn connect(
    namespace: Option<&str>,
    context: Option<&str>,
) -> Result<Connection, StoreError> {
    let context = non_empty(context.map(str::to_string))
        .or_else(|| non_empty(std::env::var(CONTEXT_ENV).ok()));
    let explicit_kubeconfig = non_empty(std::env::var("KUBECONFIG").ok()).is_some();
    let (config, source) = if explicit_kubeconfig || context.is_some() {
        from_kubeconfig(None, context.as_deref()).await?
    } else {
        match kube::Config::incluster() {
            Ok(c) => (c, "in-cluster service account".to_string()),
            Err(in_cluster) => from_kubeconfig(None, None).await.map_err(|e| {
                config_error(format!(
                    "no Kubernetes credentials: not in a Pod with a service account \
                     ({in_cluster}), and {e}"
                ))
            })?,
        }
    };
    finish(config, source, namespace)
}

/// Connect through the kubeconfig file at `path` (tests, and callers that manage their own).
pub(crate) async fn connect_kubeconfig(
    path: &Path,
    namespace: Option<&str>,
    context: Option<&str>,
) -> Result<Connection, StoreError> {
    let (config, source) = from_kubeconfig(Some(path), context).await?;
    finish(config, source, namespace)
}

async fn from_kubeconfig(
    path: Option<&Path>,
    context: Option<&str>,
) -> Result<(kube::Config, String), StoreError> {
    let options = KubeConfigOptions {
        context: context.map(str::to_string),
        ..KubeConfigOptions::default()
    };
    let where_ = path.map_or_else(
        || "KUBECONFIG / ~/.kube/config".to_string(),
        |p| p.display().to_string(),
    );
    let loaded = match path {
        Some(p) => match Kubeconfig::read_from(p) {
            Ok(kc) => kube::Config::from_custom_kubeconfig(kc, &options).await,
            Err(e) => Err(e),
        },
        None => kube::Config::from_kubeconfig(&options).await,
    };
    let config = loaded.map_err(|e| {
        config_error(format!(
            "cannot use the kubeconfig ({where_}{}): {e}; run in a Pod with a service account, \
             or point KUBECONFIG (and --kube-context) at a working kubeconfig",
            context
                .map(|c| format!(", context {c}"))
                .unwrap_or_default()
        ))
    })?;
    let source = format!(
        "kubeconfig{}, server {}",
        context.map(|c| format!(" context {c}")).unwrap_or_default(),
        config.cluster_url
    );
    Ok((config, source))
}

fn finish(
    mut config: kube::Config,
    source: String,
    namespace: Option<&str>,
) -> Result<Connection, StoreError> {
    // kube's own retry layer would hide retries from our bounds; `api::call` does them instead.
    config.default_retry = false;
    config.connect_timeout = Some(CONNECT_TIMEOUT);
    // Only ring is built in; make it the process default so rustls never has to guess.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let namespace = namespace
        .map(str::to_string)
        .unwrap_or_else(|| config.default_namespace.clone());
    let server = config.cluster_url.to_string();
    let client = kube::Client::try_from(config)
        .map_err(|e| config_error(format!("cannot build a Kubernetes client: {e}")))?;
    Ok(Connection {
        client,
        namespace,
        source,
        server,
    })
}
