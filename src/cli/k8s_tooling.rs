//! Glue for `initguard install`, `k8s inject` and `k8s lint`: read the input, turn flags into
//! options, print. No logic of their own: that lives in `install.rs` and `k8s/`.

use super::failure::Failure;
#[cfg(feature = "kubernetes")]
use super::settings::SettingsError;
#[cfg(feature = "kubernetes")]
use std::io::{Read, Write};
#[cfg(feature = "kubernetes")]
use std::path::Path;
use tracing::info;

pub fn install(args: &super::args::InstallArgs) -> Result<u8, Failure> {
    let path = crate::install::install(&crate::install::current_exe(), &args.dir)?;
    info!(path = %path.display(), "installed initguard to {}", path.display());
    Ok(crate::exit::OK)
}

/// The manifest text of `-f FILE` (`-`: stdin).
#[cfg(feature = "kubernetes")]
fn read_input(file: &Path) -> Result<String, Failure> {
    let read = |r: std::io::Result<String>| {
        r.map_err(|source| Failure::Input {
            path: file.to_path_buf(),
            source,
        })
    };
    if file == Path::new("-") {
        let mut s = String::new();
        read(std::io::stdin().read_to_string(&mut s).map(|_| s))
    } else {
        read(std::fs::read_to_string(file))
    }
}

#[cfg(feature = "kubernetes")]
fn print(text: &str) -> Result<(), Failure> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|_| out.flush())
        .map_err(|source| Failure::Input {
            path: "stdout".into(),
            source,
        })
}

#[cfg(feature = "kubernetes")]
pub fn inject(args: &super::args::InjectArgs) -> Result<u8, Failure> {
    use crate::k8s::inject::{InjectOptions, inject};
    let scope = args
        .scope
        .as_deref()
        .map(|s| {
            crate::task::Scope::parse(s).ok_or_else(|| SettingsError::Usage {
                flag: "--scope",
                why: format!("{s:?} is not one of global, pod, node"),
            })
        })
        .transpose()?;
    let commands = args
        .commands
        .iter()
        .map(|c| match c.split_once('=') {
            Some((name, cmd)) if !name.is_empty() && !cmd.trim().is_empty() => Ok((
                name.to_string(),
                cmd.split_whitespace().map(str::to_string).collect(),
            )),
            _ => Err(SettingsError::Usage {
                flag: "--command",
                why: format!("{c:?} is not CONTAINER=ENTRYPOINT"),
            }),
        })
        .collect::<Result<Vec<_>, _>>()?;
    let opts = InjectOptions {
        containers: args.containers.clone(),
        only_annotated: args.only_annotated,
        install_image: args.install.clone(),
        binary: args.binary.clone(),
        input_secrets: args.input_secrets,
        scope,
        commands,
        namespace: args.namespace.clone(),
        store: args.pod_store.clone(),
        rbac: args.rbac,
    };
    let input = read_input(&args.file)?;
    let done = inject(&input, &opts)?;
    for n in &done.notices {
        let _ = writeln!(std::io::stderr(), "initguard: {n}");
    }
    print(&done.yaml)?;
    info!("wrapped {} init container(s)", done.wrapped);
    Ok(crate::exit::OK)
}

#[cfg(feature = "kubernetes")]
pub fn lint(args: &super::args::LintArgs) -> Result<u8, Failure> {
    use super::args::LintFormat;
    use crate::k8s::{lint, lint_report};
    let input = read_input(&args.file)?;
    let findings = lint::lint(&input)?;
    let text = match args.format {
        LintFormat::Text => lint_report::text(&findings),
        LintFormat::Json => format!("{:#}\n", lint_report::json(&findings)),
        LintFormat::Sarif => {
            let uri = if args.file == Path::new("-") {
                "stdin".to_string()
            } else {
                args.file.display().to_string()
            };
            format!("{:#}\n", lint_report::sarif(&findings, &uri))
        }
    };
    print(&text)?;
    Ok(if lint::has_errors(&findings) {
        crate::exit::LINT_ERRORS
    } else {
        crate::exit::OK
    })
}
